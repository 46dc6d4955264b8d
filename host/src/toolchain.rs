//! What a language without its own component toolchain (C, C++, Zig, …) needs to become a
//! processor, carried by `ingot` itself so nobody installs wit-bindgen or wasm-tools by hand:
//! the contract's C bindings (`ingot bindings --lang c`), and the step that turns the WASI
//! preview-1 reactor module such a compiler emits into a component (`ingot componentize`), with
//! the preview-1 adapter embedded.

use std::path::{Path, PathBuf};

use wit_bindgen_core::wit_parser::Resolve;

/// The contract this `ingot` speaks.
const WIT: &str = include_str!("../../wit/processor.wit");
/// The package every processor's bindings must come from.
const PACKAGE: &str = "ingot:processor@0.1.0";
/// The world a processor implements.
const WORLD: &str = "import-processor";

/// Why bindings could not be written or a module could not be componentized.
#[derive(Debug, thiserror::Error)]
pub enum ToolchainError {
    /// Filesystem trouble.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not WebAssembly at all.
    #[error(
        "{0} is not a WebAssembly module (it does not start with \\0asm); pass the .wasm your compiler wrote"
    )]
    NotWasm(PathBuf),
    /// The file is a component already.
    #[error("{0} is already a component: it needs no componentizing; put it in processors/ as it is")]
    AlreadyComponent(PathBuf),
    /// The module is a command: it has a `_start` and would exit after main.
    #[error(
        "{0} is a command module (it exports _start); a processor is a reactor: build it with \
         `-mexec-model=reactor` (zig cc, clang) and without a main function"
    )]
    Command(PathBuf),
    /// The module does not carry the contract's type information.
    #[error(
        "{0} carries no component type: link the `import_processor_component_type.o` that \
         `ingot bindings --lang c` wrote into it (and keep it: do not strip custom sections)"
    )]
    NoComponentType(PathBuf),
    /// The module was built against another contract.
    #[error(
        "{path} was built for {found}, not {PACKAGE}: regenerate its bindings with `ingot bindings --lang c`"
    )]
    WrongContract {
        /// The module.
        path: PathBuf,
        /// The packages its component type names.
        found: String,
    },
    /// The module does not fit the contract, or is malformed.
    #[error("cannot make a processor of {path}: {reason}")]
    Encode {
        /// The module.
        path: PathBuf,
        /// What wit-component said, all of it.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ToolchainError + '_ {
    move |source| ToolchainError::Io { path: path.to_owned(), source }
}

/// The contract's C bindings, as (file name, contents): `import_processor.h`, `import_processor.c`
/// and `import_processor_component_type.o` (the object that carries the component type into the
/// linked module).
pub fn c_bindings() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut resolve = Resolve::default();
    let package = resolve.push_str("processor.wit", WIT)?;
    let world = resolve.select_world(&[package], Some(WORLD))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default().build().generate(&mut resolve, world, &mut files)?;
    Ok(files.iter().map(|(name, bytes)| (name.to_owned(), bytes.to_vec())).collect())
}

/// Writes the C bindings into `dir` (made if missing); returns the paths written.
pub fn write_c_bindings(dir: &Path) -> Result<Vec<PathBuf>, ToolchainError> {
    let files = c_bindings().map_err(|e| ToolchainError::Encode {
        path: PathBuf::from("wit/processor.wit"),
        reason: format!("{e:#}"),
    })?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut written = Vec::new();
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(io(&path))?;
        written.push(path);
    }
    Ok(written)
}

/// Turns the preview-1 reactor module at `core` into a processor component at `out`; returns
/// the component's size. The preview-1 adapter is embedded only when the module imports
/// `wasi_snapshot_preview1` (e.g. for libc's stdio); the component then imports WASI 0.2, which
/// the host links with every ambient capability denied.
pub fn componentize(core: &Path, out: &Path) -> Result<usize, ToolchainError> {
    let bytes = std::fs::read(core).map_err(io(core))?;
    let component = componentize_bytes(core, &bytes)?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::write(out, &component).map_err(io(out))?;
    Ok(component.len())
}

fn componentize_bytes(path: &Path, bytes: &[u8]) -> Result<Vec<u8>, ToolchainError> {
    if !bytes.starts_with(b"\0asm") || bytes.len() < 8 {
        return Err(ToolchainError::NotWasm(path.to_owned()));
    }
    // The layer field (bytes 6-7) tells a component (1) from a core module (0).
    if bytes[6..8] != [0, 0] {
        return Err(ToolchainError::AlreadyComponent(path.to_owned()));
    }
    let invalid = |reason: String| ToolchainError::Encode { path: path.to_owned(), reason };
    // One pass over the module: its contract section, whether it is a command, whether it needs
    // the preview-1 adapter.
    let (mut component_type, mut exports_start, mut preview1) = (false, false, false);
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| invalid(e.to_string()))? {
            wasmparser::Payload::CustomSection(section) if section.name().starts_with("component-type") => {
                component_type = true;
            }
            wasmparser::Payload::ExportSection(exports) => {
                for export in exports {
                    exports_start |= export.map_err(|e| invalid(e.to_string()))?.name == "_start";
                }
            }
            wasmparser::Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    preview1 |= import.map_err(|e| invalid(e.to_string()))?.module
                        == wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME;
                }
            }
            _ => {}
        }
    }
    if exports_start {
        return Err(ToolchainError::Command(path.to_owned()));
    }
    if !component_type {
        return Err(ToolchainError::NoComponentType(path.to_owned()));
    }
    // decode merges every component-type section into one synthetic `root:root/root` world, so the
    // contract is recognised by the packages the sections brought in.
    let encode = |e: anyhow::Error| invalid(format!("{e:#}"));
    let (_, bindgen) = wit_component::metadata::decode(bytes).map_err(encode)?;
    let packages: Vec<String> = bindgen
        .resolve
        .packages
        .iter()
        .map(|(_, p)| p.name.to_string())
        .filter(|name| name != "root:root")
        .collect();
    if !packages.iter().any(|name| name == PACKAGE) {
        let found = if packages.is_empty() { "no contract".to_owned() } else { packages.join(", ") };
        return Err(ToolchainError::WrongContract { path: path.to_owned(), found });
    }
    let mut encoder = wit_component::ComponentEncoder::default();
    encoder.validate(true).module(bytes).map_err(encode)?;
    if preview1 {
        encoder
            .adapter(
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            )
            .map_err(encode)?;
    }
    encoder.encode().map_err(encode)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_c_bindings_name_the_contract() {
        let files = c_bindings().expect("bindings");
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"import_processor.h"), "{names:?}");
        assert!(names.contains(&"import_processor.c"), "{names:?}");
        assert!(names.contains(&"import_processor_component_type.o"), "{names:?}");
        let header = &files.iter().find(|(n, _)| n == "import_processor.h").expect("header").1;
        let header = String::from_utf8_lossy(header);
        assert!(header.contains("exports_ingot_processor_processor_process_item"), "{header}");
    }

    #[test]
    fn what_is_no_core_module_is_refused_with_the_reason() {
        let path = Path::new("x.wasm");
        assert!(matches!(componentize_bytes(path, b"PK\x03\x04zip"), Err(ToolchainError::NotWasm(_))));
        let component = [0, b'a', b's', b'm', 0x0d, 0, 1, 0];
        assert!(matches!(componentize_bytes(path, &component), Err(ToolchainError::AlreadyComponent(_))));
        // An empty core module: valid WebAssembly, but no bindings linked in.
        let empty = [0, b'a', b's', b'm', 1, 0, 0, 0];
        let error = componentize_bytes(path, &empty).unwrap_err();
        assert!(matches!(error, ToolchainError::NoComponentType(_)), "{error}");
        assert!(error.to_string().contains("ingot bindings --lang c"), "{error}");
        // A command module: one function, exported as _start.
        let command = [
            &[0, b'a', b's', b'm', 1, 0, 0, 0][..],
            &[1, 4, 1, 0x60, 0, 0],
            &[3, 2, 1, 0],
            &[7, 10, 1, 6, b'_', b's', b't', b'a', b'r', b't', 0, 0],
            &[10, 4, 1, 2, 0, 0x0b],
        ]
        .concat();
        let error = componentize_bytes(path, &command).unwrap_err();
        assert!(matches!(error, ToolchainError::Command(_)), "{error}");
        assert!(error.to_string().contains("-mexec-model=reactor"), "{error}");
    }

    /// An empty core module carrying the component type of `wit`'s world `world`.
    fn module_for(wit: &str, world: &str) -> Vec<u8> {
        let mut resolve = Resolve::default();
        let package = resolve.push_str("test.wit", wit).expect("wit");
        let world = resolve.select_world(&[package], Some(world)).expect("world");
        let mut module = vec![0, b'a', b's', b'm', 1, 0, 0, 0];
        wit_component::embed_component_metadata(
            &mut module,
            &resolve,
            world,
            wit_component::StringEncoding::UTF8,
            false,
        )
        .expect("embed");
        module
    }

    #[test]
    fn a_module_built_for_another_contract_is_refused_naming_it() {
        let other =
            module_for("package acme:plugin@2.0.0;\nworld plugin { export run: func(); }\n", "plugin");
        let error = componentize_bytes(Path::new("x.wasm"), &other).unwrap_err();
        assert!(matches!(error, ToolchainError::WrongContract { .. }), "{error}");
        assert!(error.to_string().contains("acme:plugin@2.0.0"), "{error}");
    }

    #[test]
    fn a_module_that_implements_nothing_is_refused_with_wit_components_reason() {
        let hollow = module_for(WIT, WORLD);
        let error = componentize_bytes(Path::new("x.wasm"), &hollow).unwrap_err();
        assert!(matches!(error, ToolchainError::Encode { .. }), "{error}");
        let reason = error.to_string();
        assert!(
            reason.contains("failed to find export of interface `ingot:processor/processor@0.1.0`"),
            "{reason}"
        );
    }
}
