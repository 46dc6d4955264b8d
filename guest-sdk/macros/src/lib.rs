//! `#[ingot_guest::processor]`: turns an `impl Processor for T` block into a WebAssembly
//! component export. Use it through the `ingot-guest` crate, which re-exports it.

use proc_macro::TokenStream;
use quote::quote;
use syn::spanned::Spanned;
use syn::{ItemImpl, Type, parse_macro_input};

const USAGE: &str = "put #[ingot_guest::processor] on your `impl Processor for YourType { … }` block";

/// Exports the processor implemented by the annotated `impl Processor for T` block.
///
/// Exactly one processor may be exported per component. The type must be a plain, non-generic
/// type: it is what the host instantiates.
#[proc_macro_attribute]
pub fn processor(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let attr = proc_macro2::TokenStream::from(attr);
        return syn::Error::new(attr.span(), "#[processor] takes no arguments").to_compile_error().into();
    }
    let input = parse_macro_input!(item as syn::Item);
    match expand(input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(input: syn::Item) -> syn::Result<proc_macro2::TokenStream> {
    let syn::Item::Impl(block) = input else {
        return Err(syn::Error::new(input.span(), USAGE));
    };
    check_impl(&block)?;
    let self_ty = &block.self_ty;
    Ok(quote! {
        #block

        const _: () = {
            #[doc(hidden)]
            struct __IngotProcessorExport;

            impl ::ingot_guest::__private::Guest for __IngotProcessorExport {
                fn validate_batch(batch: ::ingot_guest::__private::wit::BatchInfo) -> ::core::result::Result<(), ::std::string::String> {
                    ::ingot_guest::__private::validate_batch::<#self_ty>(batch)
                }
                fn validate_item(item: ::ingot_guest::__private::wit::Item) -> ::core::result::Result<(), ::ingot_guest::__private::wit::ItemError> {
                    ::ingot_guest::__private::validate_item::<#self_ty>(item)
                }
                fn process_item(item: ::ingot_guest::__private::wit::Item) -> ::core::result::Result<::ingot_guest::__private::wit::Outcome, ::ingot_guest::__private::wit::ItemError> {
                    ::ingot_guest::__private::process_item::<#self_ty>(item)
                }
                fn on_batch_start(batch: ::ingot_guest::__private::wit::BatchInfo) -> ::core::result::Result<(), ::std::string::String> {
                    ::ingot_guest::__private::on_batch_start::<#self_ty>(batch)
                }
                fn on_batch_complete(batch: ::ingot_guest::__private::wit::BatchInfo, success: bool) -> ::core::result::Result<(), ::std::string::String> {
                    ::ingot_guest::__private::on_batch_complete::<#self_ty>(batch, success)
                }
                fn on_item_error(item: ::ingot_guest::__private::wit::Item, error: ::ingot_guest::__private::wit::ItemError) {
                    ::ingot_guest::__private::on_item_error::<#self_ty>(item, error)
                }
            }

            // Exported from components only: a native build (`cargo test` of a processor's rules)
            // links without the component's symbols, whose names no native linker accepts, and
            // keeps the processor alive for the compiler this way instead.
            #[cfg(not(target_family = "wasm"))]
            #[used]
            static __INGOT_NATIVE_PROCESS_ITEM: fn(::ingot_guest::__private::wit::Item) -> ::core::result::Result<::ingot_guest::__private::wit::Outcome, ::ingot_guest::__private::wit::ItemError> =
                <__IngotProcessorExport as ::ingot_guest::__private::Guest>::process_item;
            #[cfg(target_family = "wasm")]
            ::ingot_guest::__export_import_processor_impl!(
                __IngotProcessorExport with_types_in ::ingot_guest::__private::bindings
            );
        };
    })
}

/// Rejects what cannot be exported, pointing at the offending tokens.
fn check_impl(block: &ItemImpl) -> syn::Result<()> {
    let Some((negative, path, _)) = &block.trait_ else {
        return Err(syn::Error::new_spanned(&block.self_ty, USAGE));
    };
    if negative.is_some() {
        return Err(syn::Error::new_spanned(path, "a processor cannot be a negative impl"));
    }
    if path.segments.last().is_none_or(|s| s.ident != "Processor") {
        return Err(syn::Error::new_spanned(path, USAGE));
    }
    if !block.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &block.generics,
            "an exported processor cannot be generic: implement Processor for one concrete type",
        ));
    }
    if !matches!(&*block.self_ty, Type::Path(_)) {
        return Err(syn::Error::new_spanned(
            &block.self_ty,
            "implement Processor for a named type, e.g. `struct MyProcessor;`",
        ));
    }
    Ok(())
}
