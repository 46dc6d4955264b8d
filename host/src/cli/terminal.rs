//! Text a processor (or an input file) wrote, made safe to print on an operator's terminal.
//!
//! A log message, an error or a source row could hold escape sequences that move the cursor,
//! recolour or clear the screen, set the clipboard (OSC 52) or retitle the window, or a line
//! break followed by a forged `[item 7] ERROR …` line. Printed for people, every control
//! character is shown as an escape instead (`\n`, `\x1b`, `\u{9b}`), and so are the invisible
//! characters that reorder text (bidirectional overrides), so each line of output is exactly
//! one line of what Ingot says. `--json` output needs none of this: JSON escapes its control
//! characters itself.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal as it is.
fn unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
}

/// `text` with every control character (and bidirectional override) escaped.
pub(crate) fn safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && unsafe_char(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::safe;

    #[test]
    fn escapes_cannot_reach_the_terminal() {
        assert_eq!(safe("plain text, é ✓"), "plain text, é ✓");
        assert_eq!(safe("a\n[item 7] ERROR processor: forged"), "a\\n[item 7] ERROR processor: forged");
        assert_eq!(safe("\x1b]52;c;cGF5bG9hZA==\x07"), "\\x1b]52;c;cGF5bG9hZA==\\x07");
        assert_eq!(safe("\x1b[2J\x1b[H"), "\\x1b[2J\\x1b[H");
        assert_eq!(safe("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(safe("\u{202E}gnp.exe"), "\\u{202e}gnp.exe");
        assert_eq!(safe("tab\there\r"), "tab\\there\\r");
        assert_eq!(safe("\x7f"), "\\x7f");
    }
}
