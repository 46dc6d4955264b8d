//! Imports customers: email (required, normalised, unique), name (required), country (optional
//! ISO 3166 alpha-2). Importing an email again updates that customer.
use ingot_guest::prelude::*;

#[derive(Deserialize, Serialize)]
#[serde(crate = "ingot_guest::serde")]
struct Customer {
    email: Option<String>,
    name: Option<String>,
    country: Option<String>,
}

// The regex ^[^@\s]+@[^@\s]+\.[^@\s]+$, checked without pulling a regex engine into the guest.
fn is_email(s: &str) -> bool {
    let Some((user, host)) = s.split_once('@') else { return false };
    let dot_inside = host.char_indices().any(|(i, c)| c == '.' && i > 0 && i + 1 < host.len());
    !user.is_empty() && !host.contains('@') && !s.contains(char::is_whitespace) && dot_inside
}

// Checks run in this order and the first failure is reported.
fn normalise(item: &Item) -> Result<Customer, ItemError> {
    let row: Customer = item.parse()?;
    let email = row.email.unwrap_or_default().trim().to_lowercase();
    let name = row.name.unwrap_or_default().trim().to_string();
    let country = row.country.unwrap_or_default().trim().to_ascii_uppercase();
    if !is_email(&email) {
        return Err(ItemError::invalid("email is not a valid address").code("invalid_email").field("email"));
    }
    if name.is_empty() {
        return Err(ItemError::invalid("name is required").code("missing_name").field("name"));
    }
    if !(country.is_empty() || country.len() == 2 && country.bytes().all(|b| b.is_ascii_alphabetic())) {
        return Err(ItemError::invalid("country must be 2 letters").code("invalid_country").field("country"));
    }
    Ok(Customer { email: Some(email), name: Some(name), country: Some(country).filter(|c| !c.is_empty()) })
}

struct CustomerData;

#[ingot_guest::processor]
impl Processor for CustomerData {
    fn process_item(item: &Item) -> Result<Outcome, ItemError> {
        let c = normalise(item)?;
        let sql = "INSERT INTO customers (email, name, country) VALUES ($1, $2, $3) ON CONFLICT (email) DO UPDATE \
                   SET name = EXCLUDED.name, country = EXCLUDED.country, updated_at = now() RETURNING id";
        let id: String = db::query_scalar(sql, params![c.email, c.name, c.country])?;
        Outcome::new("customers", id).with_data(&c)
    }
}
