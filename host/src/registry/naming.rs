//! Batch types from file names: the stem in snake_case.

use heck::ToSnakeCase;

/// The batch type a processor file stem maps to: `CustomerData` and `customer-data` both give
/// `customer_data`. `None` when the stem has nothing to make a name of, or would not start with a
/// letter.
pub fn batch_type_from_stem(stem: &str) -> Option<String> {
    let name = stem.to_snake_case();
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    valid.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::batch_type_from_stem;

    #[test]
    fn stems_become_snake_case_batch_types() {
        assert_eq!(batch_type_from_stem("CustomerData").as_deref(), Some("customer_data"));
        assert_eq!(batch_type_from_stem("customer-data").as_deref(), Some("customer_data"));
        assert_eq!(batch_type_from_stem("customer_data").as_deref(), Some("customer_data"));
        assert_eq!(batch_type_from_stem("TransactionFeedV2").as_deref(), Some("transaction_feed_v2"));
        assert_eq!(batch_type_from_stem("HTTPImport").as_deref(), Some("http_import"));
    }

    #[test]
    fn stems_without_a_usable_name_are_refused() {
        assert_eq!(batch_type_from_stem(""), None);
        assert_eq!(batch_type_from_stem("2fast"), None);
        assert_eq!(batch_type_from_stem("---"), None);
        assert_eq!(batch_type_from_stem("café"), None);
    }
}
