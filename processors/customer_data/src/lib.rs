//! Imports customers: email (required, normalised, unique), name (required), country (optional
//! ISO 3166 alpha-2). Re-importing an email updates the existing customer.
use ingot_guest::prelude::*;

#[derive(Deserialize, Serialize)]
#[serde(crate = "ingot_guest::serde")]
struct Customer {
    email: Option<String>,
    name: Option<String>,
    country: Option<String>,
}

// Same as the regex ^[^@\s]+@[^@\s]+\.[^@\s]+$ without pulling a regex engine into the guest.
fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else { return false };
    let dot = |(i, c): (usize, char)| c == '.' && i > 0 && i + 1 < domain.len();
    !local.is_empty() && !domain.contains('@') && !s.contains(char::is_whitespace)
        && domain.char_indices().any(dot)
}

fn normalise(item: &Item) -> Result<Customer, ItemError> {
    let row: Customer = item.parse()?;
    let email = row.email.unwrap_or_default().trim().to_lowercase();
    if !is_email(&email) {
        return Err(ItemError::invalid("email is not a valid address").code("invalid_email").field("email"));
    }
    let name = row.name.unwrap_or_default().trim().to_string();
    if name.is_empty() {
        return Err(ItemError::invalid("name is required").code("missing_name").field("name"));
    }
    let country = match row.country.as_deref().map(str::trim).unwrap_or_default() {
        "" => None,
        c if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) => Some(c.to_ascii_uppercase()),
        _ => return Err(ItemError::invalid("country must be two letters").code("invalid_country").field("country")),
    };
    Ok(Customer { email: Some(email), name: Some(name), country })
}

struct CustomerData;

#[ingot_guest::processor]
impl Processor for CustomerData {
    fn validate_item(item: &Item) -> Result<(), ItemError> {
        normalise(item).map(drop)
    }

    fn process_item(item: &Item) -> Result<Outcome, ItemError> {
        let c = normalise(item)?;
        let id: String = db::query_scalar(
            "INSERT INTO customers (email, name, country) VALUES ($1, $2, $3)
             ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name, country = EXCLUDED.country,
             updated_at = now() RETURNING id",
            params![c.email, c.name, c.country],
        )?;
        Outcome::new("customers", id).with_data(&c)
    }
}
