//! What a calling code says about the numbers behind it: the lengths its numbers have, its
//! countries' trunk prefixes, and its main country. Read from a table (`table.rs`) made from
//! libphonenumber's metadata, so that the common case, a number already in E.164, is checked
//! without loading the crate's database (70 ms at the first number); a test keeps the table
//! equal to the metadata.

use phonenumber::Metadata;
use phonenumber::Type;
use phonenumber::metadata::Descriptor;

use super::table::TABLE;

/// The region libphonenumber gives the codes of international services (+800, +881, …).
const NON_GEOGRAPHIC: &str = "001";

/// One calling code, as the table holds it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Code {
    /// The calling code.
    pub(super) code: u16,
    /// Its main country (ISO code).
    pub(super) country: &'static str,
    /// Every length its numbers have after the code, sorted.
    pub(super) lengths: &'static [u16],
    /// The lengths of local numbers only (without an area code).
    pub(super) local: &'static [u16],
    /// The trunk prefixes of its countries (`0`, `8`, `1`, …).
    pub(super) trunks: &'static [&'static str],
    /// The main country's prefix for parsing (a pattern), where it says more than its trunk prefix.
    pub(super) parsing: Option<&'static str>,
}

impl Code {
    /// The code, if it is one.
    pub(super) fn of(code: u16) -> Option<&'static Code> {
        TABLE
            .binary_search_by_key(&code, |c| c.code)
            .ok()
            .map(|i| &TABLE[i])
    }

    /// The main country's metadata (the only entry of a non-geographic code).
    pub(super) fn metadata(&self) -> Option<&'static Metadata> {
        phonenumber::metadata::DATABASE
            .by_code(&self.code)
            .and_then(|all| all.first().copied())
    }

    /// Who the code's numbers belong to, for a message.
    fn name(&self) -> &'static str {
        match self.country {
            NON_GEOGRAPHIC => "an international service",
            country => country,
        }
    }

    /// Whether a national number may start with a trunk prefix of one of the code's countries
    /// (or what the main country's prefix for parsing takes off): such a number is read the
    /// long way, by libphonenumber's rules.
    pub(super) fn has_trunk_prefix(&self, national: &str) -> bool {
        self.trunks
            .iter()
            .any(|prefix| national.starts_with(prefix))
            || self.parsing.is_some_and(|_| {
                self.parsing_pattern()
                    .is_none_or(|re| re.find(national).is_some_and(|m| m.end() > 0))
            })
    }

    /// The prefix for parsing, compiled once per code: asked for every E.164 number of the code,
    /// so without the shared cache's lock and hashing of the pattern.
    fn parsing_pattern(&self) -> Option<&'static regex::Regex> {
        static COMPILED: std::sync::LazyLock<
            Vec<std::sync::OnceLock<Option<&'static regex::Regex>>>,
        > = std::sync::LazyLock::new(|| TABLE.iter().map(|_| std::sync::OnceLock::new()).collect());
        let at = TABLE.binary_search_by_key(&self.code, |c| c.code).ok()?;
        *COMPILED[at].get_or_init(|| self.parsing.and_then(super::kind::leading))
    }
}

/// Whether a national number of `length` digits is possible under this code, as libphonenumber
/// decides it (for a code several countries share, by the main country's lengths).
pub(super) fn possible(code: &Code, length: usize) -> Result<(), String> {
    let (Some(&shortest), Some(&longest)) = (code.lengths.first(), code.lengths.last()) else {
        return Ok(());
    };
    let length = u16::try_from(length).unwrap_or(u16::MAX);
    if code.lengths.contains(&length) {
        return Ok(());
    }
    let why = if code.local.contains(&length) {
        "is a local number without its area code"
    } else if length < shortest {
        "is too short"
    } else if length > longest {
        "is too long"
    } else {
        "has a length no number has"
    };
    Err(format!(
        "phone {why} for {} (+{}): its numbers have {} digits after the country code",
        code.name(),
        code.code,
        list(code.lengths)
    ))
}

fn list(lengths: &[u16]) -> String {
    let words: Vec<String> = lengths.iter().map(u16::to_string).collect();
    match words.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// The descriptions of each kind of number, in the order libphonenumber tests them.
pub(super) fn kinds(meta: &Metadata) -> [(Option<&Descriptor>, Type); 10] {
    let d = meta.descriptors();
    [
        (d.premium_rate(), Type::PremiumRate),
        (d.toll_free(), Type::TollFree),
        (d.shared_cost(), Type::SharedCost),
        (d.voip(), Type::Voip),
        (d.personal_number(), Type::PersonalNumber),
        (d.pager(), Type::Pager),
        (d.uan(), Type::Uan),
        (d.voicemail(), Type::Voicemail),
        (d.fixed_line(), Type::FixedLine),
        (d.mobile(), Type::Mobile),
    ]
}

/// Every length a country's numbers have, and those of local numbers only: libphonenumber's
/// build puts their union in the general description; the crate's metadata does not.
pub(super) fn lengths(meta: &Metadata) -> (Vec<u16>, Vec<u16>) {
    let general = meta.descriptors().general();
    let mut all = general.possible_length().to_vec();
    let mut local = general.possible_local_length().to_vec();
    for desc in kinds(meta).into_iter().filter_map(|(desc, _)| desc) {
        all.extend_from_slice(desc.possible_length());
        local.extend_from_slice(desc.possible_local_length());
    }
    for list in [&mut all, &mut local] {
        list.sort_unstable();
        list.dedup();
    }
    // Local-only means no number of national length has it (as libphonenumber's build).
    local.retain(|l| !all.contains(l));
    (all, local)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use phonenumber::metadata::DATABASE;

    use super::*;

    /// The table `table.rs` must hold, from the crate's metadata: per code, the main country's
    /// lengths (as libphonenumber's `isPossibleNumber` takes them) and every country's trunk
    /// prefix.
    fn expected() -> String {
        /// Main country, lengths, local lengths, trunk prefixes, prefix for parsing.
        type Entry = (String, Vec<u16>, Vec<u16>, Vec<String>, Option<String>);
        let mut codes: BTreeMap<u16, Entry> = BTreeMap::new();
        // By code, not by region: the non-geographic codes (+800, +870, +881, …) share the
        // region `001`, under which the crate keeps only one of them.
        let all = (1..1000u16).filter_map(|code| DATABASE.by_code(&code));
        for meta in all.flatten() {
            let entry = codes.entry(meta.country_code()).or_default();
            if let Some(prefix) = meta.national_prefix()
                && !entry.3.iter().any(|p| p == prefix)
            {
                entry.3.push(prefix.to_string());
            }
            if meta.is_main_country_for_code() || entry.0.is_empty() {
                let (all, local) = lengths(meta);
                (entry.0, entry.1, entry.2) = (meta.id().to_string(), all, local);
                entry.4 = meta
                    .national_prefix_for_parsing()
                    .map(|p| p.as_str().split_whitespace().collect::<String>())
                    .filter(|p| Some(p.as_str()) != meta.national_prefix());
            }
        }
        let mut out = String::from(TABLE_HEAD);
        for (code, (country, all, local, trunks, parsing)) in codes {
            out.push_str(&format!(
                "    Code {{ code: {code}, country: {country:?}, lengths: &{all:?}, local: &{local:?}, trunks: &{trunks:?}, parsing: {parsing:?} }},\n"
            ));
        }
        out.push_str("];\n");
        out
    }

    const TABLE_HEAD: &str = "//! Generated from the `phonenumber` crate's metadata by `phone::codes::tests`; do not edit.\n//! Regenerate: `VERIGATOR_WRITE_PHONE_TABLE=1 cargo test --lib phone::codes`.\n\nuse super::codes::Code;\n\n/// Every calling code, sorted.\n#[rustfmt::skip]\npub(super) static TABLE: &[Code] = &[\n";

    #[test]
    fn the_table_is_the_metadata_of_the_crate() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/phone/table.rs");
        let want = expected();
        if std::env::var_os("VERIGATOR_WRITE_PHONE_TABLE").is_some() {
            std::fs::write(path, &want).expect("write the table");
        }
        let have = std::fs::read_to_string(path).expect("table");
        assert!(
            have == want,
            "src/phone/table.rs is not the crate's metadata: regenerate it (VERIGATOR_WRITE_PHONE_TABLE=1 cargo test --lib phone::codes)"
        );
    }
}
