//! What the HTML pages share (the acknowledgement pages, the plan): maud
//! builds them at compile time and escapes every value spliced in; text
//! goes in as [`Text`].

use maud::{PreEscaped, Render};

/// Starts every page, in the lower case that pages have always had.
pub const DOCTYPE: PreEscaped<&str> = PreEscaped("<!doctype html>");

/// Text on a page. maud escapes `&`, `<`, `>` and `"`; the apostrophe is
/// written `&#39;` as well, as the pages always have, so that names read
/// the same as before maud and stay inert inside any quoting.
#[derive(Debug, Clone, Copy)]
pub struct Text<'a>(pub &'a str);

impl Render for Text<'_> {
    fn render_to(&self, out: &mut String) {
        for (i, part) in self.0.split('\'').enumerate() {
            if i > 0 {
                out.push_str("&#39;");
            }
            part.render_to(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use maud::html;

    use super::*;

    #[test]
    fn html_escapes_markup() {
        assert_eq!(
            html! { (Text(r#"<script>alert("x&y")</script>'"#)) }.into_string(),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;&#39;"
        );
    }
}
