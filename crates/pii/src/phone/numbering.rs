//! Phone number validity from libphonenumber's metadata, with the patterns compiled once.
//!
//! `phonenumber::parse` + `is_valid` keep the metadata's regular expressions in a shared cache of
//! 100 entries; trying a national number in tens of regions evicts them on every call and the
//! parse recompiles them (about 0.1 ms a number, 70 KB/s of text). The rule is the same here:
//! a number is valid in a region when its national significant number (trunk prefix removed)
//! has a possible length and matches the region's general pattern and the pattern of one
//! number type (fixed line, mobile, toll free…).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use phonenumber::metadata::{Descriptor, Metadata, DATABASE};
use phonenumber::Type;
use regex::Regex;

/// One region's patterns, anchored and compiled.
struct RegionRules {
    trunk_prefix: Option<String>,
    general: Rule,
    types: Vec<Rule>,
}

struct Rule {
    lengths: Vec<u16>,
    pattern: Regex,
}

impl Rule {
    fn of(descriptor: &Descriptor) -> Option<Self> {
        // The metadata writes its patterns over several lines (libphonenumber ignores whitespace).
        let pattern = regex::RegexBuilder::new(&format!("^(?:{})$", descriptor.national_number().as_str()))
            .ignore_whitespace(true)
            .build()
            .ok()?;
        Some(Self {
            lengths: descriptor.possible_length().to_vec(),
            pattern,
        })
    }

    fn matches(&self, national: &str) -> bool {
        (self.lengths.is_empty() || self.lengths.contains(&(national.len() as u16))) && self.pattern.is_match(national)
    }
}

const NUMBER_TYPES: [Type; 9] = [
    Type::FixedLine,
    Type::Mobile,
    Type::TollFree,
    Type::PremiumRate,
    Type::SharedCost,
    Type::PersonalNumber,
    Type::Voip,
    Type::Uan,
    Type::Pager,
];

impl RegionRules {
    fn of(metadata: &Metadata) -> Option<Self> {
        let descriptors = metadata.descriptors();
        Some(Self {
            trunk_prefix: metadata.national_prefix().map(str::to_owned),
            general: Rule::of(descriptors.general())?,
            types: NUMBER_TYPES
                .iter()
                .filter_map(|kind| descriptors.get(*kind))
                .filter_map(Rule::of)
                .collect(),
        })
    }

    fn valid_national(&self, national: &str) -> bool {
        self.general.matches(national) && self.types.iter().any(|rule| rule.matches(national))
    }

    /// `digits` as dialled inside the region: with or without its trunk prefix.
    fn valid_dialled(&self, digits: &str) -> bool {
        let without_trunk = self.trunk_prefix.as_deref().and_then(|p| digits.strip_prefix(p));
        without_trunk.is_some_and(|national| self.valid_national(national)) || self.valid_national(digits)
    }
}

static RULES: LazyLock<RwLock<HashMap<String, Option<Arc<RegionRules>>>>> = LazyLock::new(Default::default);

fn rules(region: &str) -> Option<Arc<RegionRules>> {
    if let Some(rules) = RULES.read().unwrap_or_else(|p| p.into_inner()).get(region) {
        return rules.clone();
    }
    let rules = DATABASE.by_id(region).and_then(RegionRules::of).map(Arc::new);
    RULES
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(region.to_owned(), rules.clone());
    rules
}

/// Valid as a number dialled inside `region` (ISO code, e.g. `GB`): `020 7946 0958`.
pub(super) fn valid_in_region(digits: &str, region: &str) -> bool {
    rules(region).is_some_and(|rules| rules.valid_dialled(digits))
}

/// Valid as an international number: `digits` start with the country calling code (`44…`).
/// A national trunk prefix after the code (`+44 (0)20…`) is tolerated.
pub(super) fn valid_international(digits: &str) -> bool {
    (1..=3).filter(|&n| n < digits.len()).any(|n| {
        let Ok(code) = digits[..n].parse::<u16>() else {
            return false;
        };
        let national = &digits[n..];
        DATABASE.by_code(&code).is_some_and(|regions| {
            regions
                .iter()
                .filter_map(|metadata| rules(metadata.id()))
                .any(|rules| rules.valid_dialled(national))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_libphonenumber() {
        for (digits, region, valid) in [
            ("02079460958", "GB", true),
            ("02079460958", "US", false),
            ("4155552671", "US", true),
            ("0612345678", "FR", true),
            ("030123456", "DE", true),
            ("123", "DE", false),
        ] {
            assert_eq!(valid_in_region(digits, region), valid, "{digits} in {region}");
            let parsed = phonenumber::parse(Some(region.parse().unwrap()), digits)
                .is_ok_and(|number| phonenumber::is_valid(&number));
            assert_eq!(parsed, valid, "libphonenumber: {digits} in {region}");
        }
        assert!(valid_international("442079460958"));
        assert!(valid_international("4402079460958"));
        assert!(!valid_international("999123"));
    }
}
