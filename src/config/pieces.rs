//! A large config parsed a few dozen kilobytes at a time.
//!
//! toml's parser holds the whole document three times over while it works
//! (its tokens, its parse events and a tree of spanned values): some 36
//! bytes of heap per byte of text, 60 MB for a file of 10,000 probes, at
//! the daemon's start, where that peak stays its peak RSS for good (the
//! allocator keeps what was freed). Cut at the headers of `[[probe]]`,
//! `[[component]]` and the other arrays of tables, each piece parses on
//! its own into its typed elements, and the peak is that of one piece.
//!
//! Only a text whose pieces mean exactly what the whole means is parsed
//! this way: the headers are found by a scan that knows strings, comments
//! and brackets; an element piece holds one `[[X]]` header and the
//! `[X.…]` headers under it; every other table goes, in file order, to
//! one head text, which never names an array of tables. Anything else (a
//! key before the first header, a quoted header key, `[probe.check]` away
//! from its `[[probe]]`), and any error in any piece, makes the caller
//! parse the whole text as before, so errors and their positions are
//! exactly what they were.

use std::sync::Arc;

use serde::Deserialize;

use super::schema::{
    ChannelConfig, ComponentConfig, Config, GroupConfig, MeetingPlaceConfig, PersonConfig,
    PolicyConfig, ProbeConfig, RoleConfig, ServiceConfig, TokenConfig,
};

/// Element pieces are parsed together up to about this many bytes.
const BATCH: usize = 64 * 1024;

/// The top-level arrays of tables of [`Config`]: the keys of [`Elements`].
const ARRAYS: &[&str] = &[
    "token",
    "probe",
    "component",
    "service",
    "person",
    "role",
    "group",
    "channel",
    "policy",
    "meeting_place",
];

/// The elements of the arrays of tables in a run of element pieces.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Elements {
    #[serde(default, rename = "token")]
    tokens: Vec<TokenConfig>,
    #[serde(default, rename = "probe", deserialize_with = "super::schema::shared")]
    probes: Vec<Arc<ProbeConfig>>,
    #[serde(default, rename = "component")]
    components: Vec<ComponentConfig>,
    #[serde(default, rename = "service")]
    services: Vec<ServiceConfig>,
    #[serde(default, rename = "person")]
    people: Vec<PersonConfig>,
    #[serde(default, rename = "role")]
    roles: Vec<RoleConfig>,
    #[serde(default, rename = "group")]
    groups: Vec<GroupConfig>,
    #[serde(default, rename = "channel")]
    channels: Vec<ChannelConfig>,
    #[serde(default, rename = "policy")]
    policies: Vec<PolicyConfig>,
    #[serde(default, rename = "meeting_place")]
    meeting_places: Vec<MeetingPlaceConfig>,
}

/// The config the text makes, parsed piece by piece; `None` when the text
/// cannot be cut safely or a piece does not parse (the caller then parses
/// the whole, which says what is wrong and where).
pub(super) fn parse(text: &str) -> Option<Config> {
    let headers = headers(text)?;
    let mut head = String::new();
    // Runs of element pieces, each one contiguous stretch of the text.
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut element: Option<&str> = None;
    for (n, header) in headers.iter().enumerate() {
        let end = headers.get(n + 1).map_or(text.len(), |h| h.at);
        let is_array = ARRAYS.contains(&header.first);
        if is_array && header.array && !header.dotted {
            element = Some(header.first);
            match runs.last_mut() {
                Some((start, last)) if *last == header.at && end - *start <= BATCH => *last = end,
                _ => runs.push((header.at, end)),
            }
        } else if is_array {
            // `[X.…]` belongs to the `[[X]]` right above it, and nothing
            // else may name an array of tables.
            if !header.dotted || element != Some(header.first) {
                return None;
            }
            let (_, last) = runs.last_mut()?;
            if *last != header.at {
                return None;
            }
            *last = end;
        } else {
            element = None;
            head.push_str(&text[header.at..end]);
            if !head.ends_with('\n') {
                head.push('\n');
            }
        }
    }
    let mut config: Config = toml::from_str(&head).ok()?;
    for (start, end) in runs {
        let found: Elements = toml::from_str(&text[start..end]).ok()?;
        config.tokens.extend(found.tokens);
        config.probes.extend(found.probes);
        config.components.extend(found.components);
        config.services.extend(found.services);
        config.people.extend(found.people);
        config.roles.extend(found.roles);
        config.groups.extend(found.groups);
        config.channels.extend(found.channels);
        config.policies.extend(found.policies);
        config.meeting_places.extend(found.meeting_places);
    }
    // Grown by doubling: up to half of a list of 10,000 probes was room
    // to spare, held for as long as the daemon runs.
    config.tokens.shrink_to_fit();
    config.probes.shrink_to_fit();
    config.components.shrink_to_fit();
    config.services.shrink_to_fit();
    config.people.shrink_to_fit();
    config.roles.shrink_to_fit();
    config.groups.shrink_to_fit();
    config.channels.shrink_to_fit();
    config.policies.shrink_to_fit();
    config.meeting_places.shrink_to_fit();
    Some(config)
}

/// A table header: `[a.b]`, or `[[a.b]]` when `array`.
#[derive(Debug, PartialEq)]
struct Header<'t> {
    /// Where its `[` is.
    at: usize,
    array: bool,
    /// Its first key.
    first: &'t str,
    /// Whether it has more keys than the first.
    dotted: bool,
}

/// Every table header of the text, in order; `None` when there is
/// anything but blank lines and comments before the first, a header key
/// that is not bare, a string left open or brackets that do not pair.
fn headers(text: &str) -> Option<Vec<Header<'_>>> {
    let bytes = text.as_bytes();
    let mut out: Vec<Header<'_>> = Vec::new();
    let mut depth = 0usize;
    let mut line_start = true;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\n' => {
                line_start = true;
                i += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' => {
                i += 1;
                continue;
            }
            b'#' => {
                i = text[i..].find('\n').map_or(bytes.len(), |n| i + n);
                continue;
            }
            b'[' if depth == 0 && line_start => {
                let (header, next) = header(text, i)?;
                out.push(header);
                i = next;
                line_start = false;
                continue;
            }
            _ => {}
        }
        if out.is_empty() {
            // Keys of the root table: left to the whole parse.
            return None;
        }
        line_start = false;
        i = match b {
            b'"' | b'\'' => string_end(bytes, i)?,
            b'[' | b'{' => {
                depth += 1;
                i + 1
            }
            b']' | b'}' => {
                depth = depth.checked_sub(1)?;
                i + 1
            }
            _ => i + 1,
        };
    }
    (depth == 0).then_some(out)
}

/// The header whose `[` is at `at`, and where the text after it goes on.
fn header(text: &str, at: usize) -> Option<(Header<'_>, usize)> {
    let array = text.as_bytes().get(at + 1) == Some(&b'[');
    let open = if array { 2 } else { 1 };
    let inner = text.get(at + open..)?;
    let close = inner.find(']')?;
    let keys = &inner[..close];
    let bare = |key: &str| {
        !key.is_empty()
            && key
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
    };
    if !keys.split('.').map(str::trim).all(bare) {
        return None;
    }
    if array && !inner[close..].starts_with("]]") {
        return None;
    }
    let first = keys.split('.').next()?.trim();
    let header = Header {
        at,
        array,
        first,
        dotted: keys.contains('.'),
    };
    Some((header, at + open + close + open))
}

/// Where the string starting at `at` (one of `"`, `'`, `"""`, `'''`) ends.
fn string_end(bytes: &[u8], at: usize) -> Option<usize> {
    let quote = *bytes.get(at)?;
    let escapes = quote == b'"';
    let triple = [quote; 3];
    let multiline = bytes.get(at..at + 3) == Some(&triple[..]);
    let mut i = at + if multiline { 3 } else { 1 };
    loop {
        let b = *bytes.get(i)?;
        if escapes && b == b'\\' {
            i += 2;
        } else if !multiline && b == quote {
            return Some(i + 1);
        } else if !multiline && b == b'\n' {
            return None;
        } else if multiline && bytes.get(i..i + 3) == Some(&triple[..]) {
            // Up to two more quotes end the content, not the string.
            let mut end = i + 3;
            while end < i + 5 && bytes.get(end) == Some(&quote) {
                end += 1;
            }
            return Some(end);
        } else {
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pieces make what the whole makes, or give way to it.
    fn same(text: &str) -> Option<String> {
        let whole = toml::from_str::<Config>(text)
            .ok()
            .map(|c| format!("{c:?}"));
        let pieces = parse(text).map(|c| format!("{c:?}"));
        if pieces.is_some() {
            assert_eq!(pieces, whole, "{text}");
        }
        pieces
    }

    #[test]
    fn the_shipped_and_fuzzed_configs_parse_the_same_in_pieces() {
        let mut parsed = 0;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let seeds = std::fs::read_dir(root.join("fuzz/seeds/config_loader")).expect("seeds");
        let mut files: Vec<_> = seeds.map(|e| e.expect("seed").path()).collect();
        files.push(root.join("deploy/example/beredskab.toml"));
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read");
            if same(&text).is_some() {
                parsed += 1;
            }
        }
        assert!(parsed >= 3, "only {parsed} configs parsed in pieces");
    }

    const HEAD: &str = "[site]\nname = \"S\"\n";

    #[test]
    fn many_elements_parse_in_runs_in_their_order() {
        let mut text = HEAD.to_owned();
        for i in 0..3000 {
            text.push_str(&format!(
                "[[component]]\nid = \"c-{i}\"\nkind = \"server\"\n\
                 [[probe]]\nid = \"p-{i}\"\ncomponent = \"c-{i}\"\n\
                 url = \"http://127.0.0.1/{i}\"\n[[probe.check]]\npointer = \"/a\"\nequals = 1\nthen = \"down\"\n"
            ));
            if i == 1500 {
                text.push_str("[server]\nlisten = \"127.0.0.1:1\"\n");
            }
        }
        assert!(text.len() > 3 * BATCH);
        let config = parse(&text).expect("in pieces");
        assert_eq!(config.probes.len(), 3000);
        assert_eq!(config.probes[2999].id, "p-2999");
        assert_eq!(config.probes[7].checks.len(), 1);
        same(&text);
    }

    #[test]
    fn what_the_pieces_cannot_mean_alike_goes_to_the_whole() {
        for text in [
            // Keys of the root table.
            "site = { name = \"S\" }\n",
            // A sub-table away from its element.
            "[site]\nname = \"S\"\n[[probe]]\nid = \"p\"\ncomponent = \"c\"\n\
             [[component]]\nid = \"c\"\nkind = \"server\"\n[probe.generator]\nfuel = \"f\"\n",
            // A plain table of an array's name.
            "[site]\nname = \"S\"\n[probe]\nid = \"p\"\n",
            // A quoted header key.
            "[site]\nname = \"S\"\n[[\"probe\"]]\nid = \"p\"\n",
            // An array left open.
            "[site]\nname = \"S\"\nx = [\n",
            // A table twice, around an element.
            "[site]\nname = \"S\"\n[[role]]\nid = \"r\"\nprimary = \"p\"\n[site]\nname = \"T\"\n",
        ] {
            assert!(parse(text).is_none(), "{text}");
        }
    }

    #[test]
    fn headers_inside_strings_arrays_and_comments_are_not_headers() {
        let text = "[site]\nname = \"\"\"\n[[probe]]\n\"\"\"\"\n# [[probe]]\n\
                    x = [\n[1],\n]\ny = '''\n[[a]]'''\nz = \"[\\\"\"\n[[role]] # c\n";
        let found = headers(text).expect("headers");
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].first, "site");
        assert_eq!(found[1].first, "role");
        assert!(found[1].array && !found[1].dotted);
    }
}
