//! Street addresses in the forms used in the US, the UK, Canada, Australia and continental
//! Europe, on one line or several: a street line (`221B Baker Street`, `Hauptstraße 5`,
//! `48, rue Lemoine`, `Calle Mayor 10`, `ul. Kwiatowa 12/3`), then the components that follow it
//! in the same comma- or line-separated run (unit, city, state and ZIP, postcode and city,
//! country). A street name without a number, or a city alone, is not an address.

use std::sync::LazyLock;

use regex::Regex;

use super::dates::MONTH;
use super::dictionary::{is_always_common, is_common_word};
use super::text::regex;

/// Capitalised word of a street or city name (`Rosewood`, `O'Connell`, `Saint-Étienne`).
///
/// At least two letters (a postcode's `ZP` or `KY` is not a word); `BigotVille` is one.
const WORD: &str = r"\p{Lu}(?:[\p{Ll}\p{M}]|['’]\p{Lu})[\p{Ll}\p{M}]*(?:['’.\-]?\p{Lu}?[\p{Ll}\p{M}]+)*";
/// A regnal number in a street named after a person (`al. Jana III Sobieskiego`, `aleja Jana
/// Pawła II 97`).
const ROMAN: &str = r"[IVX]{1,4}(?-u:\b)";
/// A numbered street's name (`West 57th Street`, `3rd Ave`).
const ORDINAL: &str = r"\d{1,3}(?:st|nd|rd|th)(?-u:\b)";
/// House numbers: `12`, `12a`, `12-14`, `12/3`, `221B`.
const NUMBER: &str = r"\d{1,5}(?:[A-Za-z](?-u:\b))?(?:\s?[-/]\s?\d{1,4}[A-Za-z]?)?";

/// Street types written after the name (English), any case, plural too (Faker's `Squares`);
/// only an abbreviation takes a dot
/// (the full stop after `Cedar Street.` ends the sentence).
const SUFFIX: &str = r"(?:(?i:st|ave|av|rd|ln|blvd|dr|ct|pl|pkwy|terr|sq|hwy|cres|cir)(?-u:\b)\.?|(?i:street|avenue|road|lane|boulevard|drive|court|place|way|parkway|terrace|close|square|highway|crescent|row|gardens|grove|circle|walk|hill|hills|mews|alley|bend|bluff|branch|bridge|brook|bypass|causeway|center|centre|cliff|common|corner|course|cove|creek|crest|crossing|curve|dale|estate|estates|expressway|extension|falls|ferry|field|fields|flat|flats|ford|forest|fork|fort|freeway|gateway|glen|green|harbor|harbour|haven|heights|hollow|island|junction|key|knoll|lake|landing|light|lock|lodge|loop|mall|manor|meadow|meadows|mill|mills|mission|motorway|mount|mountain|orchard|oval|park|pass|passage|path|pike|pines|plain|plains|plaza|point|port|prairie|ramp|ranch|rapids|rest|ridge|river|route|run|shoal|shore|shores|skyway|spring|springs|spur|station|stravenue|stream|summit|trace|track|trail|tunnel|turnpike|union|valley|viaduct|view|village|ville|vista|well|wells|wharf|wynd|rise|chase|parade|quay|yard|approach|broadway|embankment|turn|outlook|reserve|rue|circlet|quadrangle|strand|brace|dell|stairs|meander|grange|gully|nook|pocket|retreat|round|vale|walkway|esplanade|promenade|boardwalk|circuit|concourse|copse|driveway|fairway|glade|laneway|link|lookout|quadrant|ramble|range|reach|return|ride|slope|steps|strip|tollway|top|underpass|villas|amble|thoroughfare|land|loaf|neck|isle|arcade|burg|keys|locks|ports|pathway|drives|roads|streets|camp|canyon|cape|club|crossroad|dam|divide|forge|garden|inlet|overpass|radial|trafficway|throughway|wall|formation|roadside|siding|subway|access|trunkway|crossway|cutting|deviation|firetrail|highroad|interchange|motorway|outlook|parkway|pursuit|rotary|serviceway|terminus|upas|waters|woods|anchorage|artery|basin|brae|brow|byway|centreway|circus|colonnade|corso|courtyard|cruiseway|entrance|footway|foreshore|frontage|intersection|parklands|piazza|plateau|quays|ridgeway|riverway|riviera|roadway|ronde|tarn|tor|towers|triangle|via|fall|end|ground|gate)s?(?-u:\b))";

/// Street types written before the name (Romance and Slavic languages), any case.
const PREFIX: &str = r"(?i:vial|acceso|cañada|carretera|bajada|barranco|pasadizo|ruela|senda|vereda|callejon|stretto|incrocio|canale|rotonda|piazzetta|calle|c/|avenida|avda\.?|av\.|plaza|pza\.?|paseo|pº|carrer|camino|cuesta|callejón|pasaje|ronda|glorieta|alameda|rambla|travesía|urbanización|vía|via|viale|piazza|piazzale|corso|largo|vicolo|strada|contrada|borgo|rua|travessa|praça|estrada|alameda|rodovia|ul\.|ulica|al\.|aleja|pl\.|plac|os\.|osiedle|str\.|strada|bulevardul|calea|aleea|şoseaua|sokak|sokağı|caddesi|cad\.|mahallesi|mah\.|ulice|náměstí|nám\.|utca|út|tér)";

/// French street types after the number (`48, rue Lemoine`).
const FRENCH: &str = r"(?i:rue|avenue|av\.|boulevard|bd|place|chemin|allée|impasse|quai|route|cours|passage|square|voie|rond-point|faubourg|sentier|villa|résidence|hameau|lieu-dit)";

/// Germanic, Dutch, Nordic and Slavic compounds (`Hauptstraße`, `Keizersgracht`, `Storgatan`).
const COMPOUND: &str = r"(?i:straße|strasse|str\.|weg|gasse|platz|allee|ring|damm|ufer|chaussee|steig|pfad|markt|straat|gracht|laan|plein|kade|singel|dijk|steeg|hof|gade|vej|väg|vägen|gatan|gata|veien|vei|vegen|katu|tie|kuja|polku|utca|gränd|baan|torget|torg|stigen|stig|dreef|stræde|boulevard|backe|allé|plads|torv|have|park|stien|leden|plan|gården|bakken|vænget|marken|kaai|hage|erf|wal|pad|lei|hoek|veld|berg|vliet|wijk|borg|bogen|feld|grund|kamp|stieg|winkel|brücke|tor)";

static STREET: LazyLock<Regex> = LazyLock::new(|| {
    let unit = r"(?:(?i:flat|apt\.?|apartment|suite|unit|studio|room|level)\s+\w+,?\s+)?";
    let english = format!(r"{unit}(?-u:\b){NUMBER},?\s+(?:(?:{WORD}|{ORDINAL})\s+){{1,3}}{SUFFIX}");
    let prefixed = format!(
        r"(?:(?-u:\b){PREFIX}|(?-u:\b)C\.)\s+(?:(?i:de la|de las|de los|del|de|da|do|dos|das|di|della|dei|degli|delle)\s+)?(?:(?:{WORD}|{ROMAN})\s+){{0,3}}(?:{WORD}|{ROMAN}),?\s+(?:n\.?º?\s*|nr\.?\s*|no\.?\s*)?{NUMBER}"
    );
    let french = format!(
        r"(?-u:\b)\d{{1,4}}(?:\s?(?:bis|ter|[A-D]))?,?\s+{FRENCH}\s+(?:(?i:de la|de l'|des|du|de|d')\s*)?(?:{WORD}\s+){{0,3}}{WORD}"
    );
    let compound = format!(
        r"(?:(?:Am|An der|An den|Auf der|Im|In der|Zum|Zur|Alte|Neue|De|Het|Van)\s+)?{WORD}-?{COMPOUND}\s+{NUMBER}"
    );
    let separate = format!(r"(?-u:\b)(?:Am|An der|An den|Auf dem|Auf der|Im|In der|Zum|Zur)\s+{WORD}\s+{NUMBER}");
    // `Flat 91, Raymond Squares`: a flat number instead of a house number.
    let flat = format!(r"(?-u:\b)(?i:flat|apartment|studio|suite|unit)\s+\w+,?\s+(?:{WORD}\s+){{1,3}}{SUFFIX}");
    // `P.O. Box 1234`, `Postfach 10 02 45`, `Apartado de Correos 61`: a box instead of a street.
    let post_box = r"(?-u:\b)(?i:p\.?\s?o\.?\s?box|post office box|postfach|apartado(?: de correos)?|case postale|boîte postale|casella postale|caixa postal|skrytka pocztowa|postbus)\s+\d{1,6}(?:\s\d{2}){0,2}(?-u:\b)";
    regex(&format!(
        r"{english}|{prefixed}|{french}|{compound}|{separate}|{flat}|{post_box}"
    ))
});

/// A component that may follow the street line, tried at the start of the rest of the text.
static COMPONENT: LazyLock<Regex> = LazyLock::new(|| {
    let city = format!(
        r"{WORD}(?:[ \-](?:(?i:am|an|der|sur|le|la|les|de|del|en|im|upon|on|in|nad|pod|na|bei|ob|lès|sous|sul|sulla|al|ad|aan|den|op|sobre)[ \-]){{0,2}}{WORD}){{0,3}}"
    );
    let upper_city = r"[A-Z][A-Z'\-]+(?: [A-Z][A-Z'\-]+){0,2}";
    let unit = r"(?i:apt\.?|apartment|suite|ste\.?|unit|flat|floor|fl\.?|piso|puerta|planta|piano|scala|interno|int\.|appartamento|edif\.?|depto\.?|etage|stock|stg\.|whg\.?|room|building|bldg\.?|box|po box|p\.o\. box)(?-u:\b)\.?\s*#?\s*\w{1,6}(?-u:\b)";
    // `3º izq.`, `2º B`, `4º 2ª` (Spanish floor and door), `m. 12` (Polish flat).
    let floor = r"(?:\d{1,2}\s?[ºª°](?:\s?(?:(?i:izq(?:da|uierda)?|dcha|dch|derecha|centro|ctro)(?-u:\b)\.?|[A-H](?-u:\b)|\d{1,2}[ºª]?))?|m\.\s?\d{1,4}(?-u:\b))";
    let alternatives = [
        unit.to_owned(),
        floor.to_owned(),
        // US, CA and AU: `Mountain View, CA 94043`, `Toronto, ON M5V 2T6`, `SYDNEY NSW 2000`.
        format!(r"(?:{city}|{upper_city}),?\s+[A-Z]{{2,3}}\s+(?:\d{{5}}(?:-\d{{4}})?|[A-Z]\d[A-Z]\s?\d[A-Z]\d|\d{{4}})(?-u:\b)"),
        // AU `Seanville, WA, 2960`; a state and postcode on their own line, `PE T4L8C8`.
        format!(r"(?:{city}|{upper_city}),\s*[A-Z]{{2,3}},\s*\d{{4}}(?-u:\b)"),
        r"[A-Z]{2,3}\s+(?:\d{5}(?:-\d{4})?|[A-Z]\d[A-Z]\s?\d[A-Z]\d|\d{4})(?-u:\b)".to_owned(),
        // Postcode then city: DE/FR/ES/IT `10115 Berlin`, NL `7884 HJ Eindhoven`, PL `00-123
        // Warszawa`, SE/CZ `114 55 Stockholm`, BR `01310-100 São Paulo`, AT/CH/DK `1010 Wien`.
        format!(r"(?:[A-Z]{{1,2}}-)?(?:\d{{5}}-\d{{3}}|\d{{4}}-\d{{3}}|\d{{2}}-\d{{3}}|\d{{4}}\s?[A-Z]{{2}}|\d{{3}}\s\d{{2}}|\d{{4,5}})\s+(?:{city}|{upper_city})(?:\s*\([A-Z]{{2}}\)|[ \t]+[A-Z]{{2}}(?-u:\b))?(?:\s*/\s*[A-Z]{{2}})?"),
        // City then postcode: `Toledo, 45123`, `London NW1 6XE`, UK postcode alone.
        format!(r"(?:{city},?\s+)?(?:[A-Z]{{1,2}}\d[A-Z\d]?\s*\d[A-Z]{{2}}|\d{{5}}(?:-\d{{4}})?|\d{{4}}\s?[A-Z]{{2}}|\d{{3}}\s\d{{2}})(?-u:\b)"),
        // Country names and US states written out.
        r"(?:USA|U\.S\.A\.|United States(?: of America)?|United Kingdom|UK|Great Britain|England|Scotland|Wales|Northern Ireland|Ireland|Germany|Deutschland|France|Spain|España|Italy|Italia|Netherlands|The Netherlands|Nederland|Belgium|België|Belgique|Austria|Österreich|Switzerland|Schweiz|Suisse|Poland|Polska|Portugal|Sweden|Sverige|Denmark|Danmark|Norway|Norge|Finland|Suomi|Canada|Australia|New Zealand|Mexico|México|Brazil|Brasil|Czech Republic|Czechia|Česká republika|Hungary|Magyarország|Romania|România|Turkey|Türkiye|India|Japan)(?-u:\b)".to_owned(),
        // A city alone (only kept when more components follow or it ends the block).
        format!(r"(?:{city}|{upper_city})(?:\s*\([A-Z]{{2}}\)|\s+[A-Z]{{2}}(?-u:\b))?"),
        // A state alone (`NSW`) or a postcode alone on its line, between other components.
        r"(?:[A-Z]{2,3}|\d{4})(?-u:\b)".to_owned(),
    ];
    regex(&format!("^(?:{})", alternatives.join("|")))
});

/// Separators between the components of one address: a comma, or a line break.
static SEPARATOR: LazyLock<Regex> =
    LazyLock::new(|| regex(r"^(?:,[ \t]*(?:\r?\n[ \t]*)?|[ \t]*\r?\n[ \t]*|[ \t]+-[ \t]+|[ \t]+)"));

/// How many components may follow a street line.
const MAX_COMPONENTS: usize = 5;

/// A street without a street type (`Jarešova 245`, `5217 Jason Land`), at the end of the text
/// before a postcode: an address only when a postcode follows it.
static UNTYPED_STREET: LazyLock<Regex> = LazyLock::new(|| {
    regex(&format!(
        r"(?:(?:[A-Z]\s+)?(?:{WORD}\s+){{0,2}}{WORD}\s+{NUMBER}|{NUMBER}\s+(?:{WORD}\s+){{0,2}}{WORD}|(?-u:\b)(?:{FRENCH}|{PREFIX})\s+(?:(?i:de la|de l'|des|du|de|d'|del|di|da)\s*)?(?:{WORD}\s+){{0,2}}{WORD})[ \t]*$"
    ))
});

/// Words that start street names without being ordinary words there (`Pod Kostelem 55`,
/// `Na Zahrádkách 168`, `Am Markt 3`).
const STREET_PREPOSITIONS: &[&str] = &[
    "Pod", "Nad", "Na", "Za", "Před", "Am", "An", "Auf", "Im", "Zum", "Zur", "Le", "La",
];

/// A separator and then a postcode: where an untyped street may end.
static POSTCODE_AFTER: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?:,[ \t]*|[ \t]*\n[ \t]*)(?:[A-Z]{1,2}-)?(?:\d{5}-\d{3}|\d{4}-\d{3}|\d{2}-\d{3}|\d{4}\s?[A-Z]{2}(?-u:\b)|\d{3}\s\d{2}(?-u:\b)|\d{4,5}(?-u:\b)|[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}(?-u:\b)|\p{Lu}[\p{L} .'-]{1,40},?\s+[A-Z]{2,3}\s+\d{4,5}(?-u:\b))",
    )
});

pub(super) fn addresses(text: &str) -> Vec<(usize, usize)> {
    let mut found: Vec<(usize, usize)> = Vec::new();
    for m in STREET.find_iter(text) {
        let street = m.as_str();
        // `12 Main Street` needs a name before the suffix: `5 Ave` alone is not one.
        if starts_with_amount(text, m.start()) || !named_like_a_street(street) || is_http_status(street) {
            continue;
        }
        let end = extend_with_components(text, m.end());
        found.push((m.start(), end));
    }
    for postcode in POSTCODE_AFTER.find_iter(text) {
        let line_start = text[..postcode.start()].rfind(['\n', ',']).map_or(0, |at| at + 1);
        let Some(m) = UNTYPED_STREET.find(&text[line_start..postcode.start()]) else {
            continue;
        };
        let (start, end) = (line_start + m.start(), line_start + m.end());
        let street = &text[start..end];
        if found.iter().any(|&(s, e)| start < e && s < end)
            || starts_with_amount(text, start)
            || is_month_and_day(street)
            || street
                .split_whitespace()
                .any(|word| word.chars().count() > 2 && !STREET_PREPOSITIONS.contains(&word) && is_common_word(word))
            || !postcode_follows(text, end)
        {
            continue;
        }
        found.push((start, extend_with_components(text, end)));
    }
    found.sort();
    found
}

/// The next component after `at` carries a postcode (`, 642 93 Pilníkov`, `\nNew Port, OR
/// 97403`).
fn postcode_follows(text: &str, at: usize) -> bool {
    let rest = &text[at..];
    SEPARATOR.find(rest).is_some_and(|separator| {
        COMPONENT
            .find(&rest[separator.end()..])
            .is_some_and(|c| c.as_str().chars().filter(char::is_ascii_digit).count() >= 4)
    })
}

/// A lower-case street type (`48 Taylor crescent`), or one that is an ordinary word, only after
/// a name that is not an English word, so `3 Users run` is not a street.
fn named_like_a_street(street: &str) -> bool {
    let words: Vec<&str> = street.split_whitespace().collect();
    let Some((last, name)) = words.split_last() else {
        return false;
    };
    // `End`, `Ground`, `Gate`, `Fall` (AS/NZS 4819 and USPS street types) are ordinary words
    // too: `2 Front End` is not a street, `04 Hawkins End` is.
    let ordinary_type =
        ["end", "ends", "ground", "grounds", "gate", "gates", "fall", "via"].contains(&last.to_lowercase().as_str());
    !(last.starts_with(char::is_lowercase) || ordinary_type)
        || name
            .iter()
            .filter(|w| w.starts_with(char::is_uppercase))
            .all(|w| !is_common_word(w))
}

/// `502 Bad Gateway` is an HTTP status in a ticket, not a street.
fn is_http_status(street: &str) -> bool {
    static STATUS: LazyLock<Regex> = LazyLock::new(|| regex(r"^[1-5]\d\d (?i:bad gateway)$"));
    STATUS.is_match(street)
}

/// `Jun 17, 2022`: a date has the shape of a continental street, number and postcode.
fn is_month_and_day(street: &str) -> bool {
    static DATE: LazyLock<Regex> = LazyLock::new(|| regex(&format!(r"^(?i:{MONTH}) \d{{1,2}}(?:st|nd|rd|th)?$")));
    DATE.is_match(street.trim())
}

/// `$12 Main…` or `12 x Road…` are not house numbers.
fn starts_with_amount(text: &str, start: usize) -> bool {
    text[..start].trim_end_matches(' ').ends_with(['$', '€', '£', '#'])
}

/// The end of the address that starts with a street line ending at `end`: components are taken
/// while they follow one another; a trailing city alone is kept only after a comma on the same
/// line or when it is followed by further components (a postcode, a country).
fn extend_with_components(text: &str, mut end: usize) -> usize {
    let mut taken = 0;
    while taken < MAX_COMPONENTS {
        let rest = &text[end..];
        let Some(separator) = SEPARATOR.find(rest) else {
            break;
        };
        let after = &rest[separator.end()..];
        let Some(component) = COMPONENT.find(after) else {
            break;
        };
        let value = component.as_str();
        // `0492-933 23` on the line under an address is a phone number, not a postcode.
        if value.ends_with(|c: char| c.is_ascii_digit()) && continues_a_number(&after[value.len()..]) {
            break;
        }
        let separator_text = separator.as_str();
        let is_city_alone = !value.chars().any(|c| c.is_ascii_digit()) && !is_country(value);
        if is_city_alone {
            // A city needs a comma or a line break before it and must not be a common word
            // (`…Street, Thanks`, `…Road\nBest regards`).
            if separator_text.trim().is_empty() && !separator_text.contains('\n') {
                break;
            }
            // After a comma on the same line a town may be an English word (`Springfield`,
            // `Reading`); only a greeting, a sign-off or a function word ends the address there.
            let rejects = |word: &str| {
                if separator_text.contains('\n') {
                    is_common_word(word)
                } else {
                    is_always_common(word) || FUNCTION_WORDS.contains(&word.to_lowercase().as_str())
                }
            };
            if value.split([' ', '-']).any(rejects) {
                break;
            }
            // Ends at a word boundary, not in the middle of a longer capitalised run.
            let next = after[value.len()..].chars().next();
            if next.is_some_and(char::is_alphanumeric) {
                break;
            }
            // After a line break, a city alone is taken only if more components follow it.
            if separator_text.contains('\n') && !followed_by_component(text, end + separator.end() + value.len()) {
                break;
            }
        }
        end += separator.end() + value.len();
        taken += 1;
    }
    end
}

/// `-933 23`, ` 525 5573`: what follows digits goes on with the same number.
fn continues_a_number(rest: &str) -> bool {
    let rest = rest.strip_prefix(['-', '.', '/', ' ']).unwrap_or(rest);
    rest.starts_with(|c: char| c.is_ascii_digit())
}

/// Words that continue a sentence after an address rather than naming its town.
const FUNCTION_WORDS: &[&str] = &[
    "and", "or", "but", "so", "then", "which", "where", "when", "if", "because", "since", "until", "while", "though",
    "also", "not", "please", "thanks", "regards", "cheers", "is", "was", "are", "were", "has", "have", "will", "can",
    "could", "would", "should", "must", "may", "might", "i", "we", "you", "they", "he", "she",
];

fn followed_by_component(text: &str, at: usize) -> bool {
    let rest = &text[at..];
    SEPARATOR.find(rest).is_some_and(|separator| {
        COMPONENT
            .find(&rest[separator.end()..])
            .is_some_and(|c| c.as_str().chars().any(|ch| ch.is_ascii_digit()) || is_country(c.as_str()))
    })
}

fn is_country(value: &str) -> bool {
    const COUNTRIES: &[&str] = &[
        "USA",
        "U.S.A.",
        "United States",
        "United States of America",
        "United Kingdom",
        "UK",
        "Great Britain",
        "England",
        "Scotland",
        "Wales",
        "Northern Ireland",
        "Ireland",
        "Germany",
        "Deutschland",
        "France",
        "Spain",
        "España",
        "Italy",
        "Italia",
        "Netherlands",
        "The Netherlands",
        "Nederland",
        "Belgium",
        "België",
        "Belgique",
        "Austria",
        "Österreich",
        "Switzerland",
        "Schweiz",
        "Suisse",
        "Poland",
        "Polska",
        "Portugal",
        "Sweden",
        "Sverige",
        "Denmark",
        "Danmark",
        "Norway",
        "Norge",
        "Finland",
        "Suomi",
        "Canada",
        "Australia",
        "New Zealand",
        "Mexico",
        "México",
        "Brazil",
        "Brasil",
        "Czech Republic",
        "Czechia",
        "Česká republika",
        "Hungary",
        "Magyarország",
        "Romania",
        "România",
        "Turkey",
        "Türkiye",
        "India",
        "Japan",
    ];
    COUNTRIES.contains(&value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<&str> {
        crate::text::slices(text, addresses(text))
    }

    #[test]
    fn english_forms() {
        assert_eq!(found("ship to 04 Hawkins End today"), vec!["04 Hawkins End"]);
        assert_eq!(
            found("at 9/50 Haas Corso, Brisbane QLD 4000"),
            vec!["9/50 Haas Corso, Brisbane QLD 4000"]
        );
        assert_eq!(
            found("Send it to 221 Baker Street, London NW1 6XE or 1600 Amphitheatre Parkway, Mountain View, CA 94043."),
            vec![
                "221 Baker Street, London NW1 6XE",
                "1600 Amphitheatre Parkway, Mountain View, CA 94043"
            ]
        );
        assert_eq!(
            found("Bill to:\nJane Roe\n48 Taylor crescent\nNewtown\nAB1 2CD\n\nTotal: $40"),
            vec!["48 Taylor crescent\nNewtown\nAB1 2CD"]
        );
        assert_eq!(
            found("Ship to 742 Evergreen Terrace Apt. 4B\nSpringfield, OR 97403\nUSA\nThanks"),
            vec!["742 Evergreen Terrace Apt. 4B\nSpringfield, OR 97403\nUSA"]
        );
        // A numbered street; a flat on the line before.
        assert_eq!(
            found("Ship to: Apartment 4B\n221 West 57th Street\nNew York, NY 10019"),
            vec!["Apartment 4B\n221 West 57th Street\nNew York, NY 10019"]
        );
        assert_eq!(
            found("I live at 5 West 3rd Ave, Denver, CO 80223."),
            vec!["5 West 3rd Ave, Denver, CO 80223"]
        );
        assert_eq!(
            found("Address: P.O. Box 1234, Springfield, IL 62704"),
            vec!["P.O. Box 1234, Springfield, IL 62704"]
        );
    }

    #[test]
    fn continental_forms() {
        assert_eq!(
            found("Bill to:\nDietmar-Kranz-Straße 60/97\n00636 Rothenburg ob der Tauber\nShip to:"),
            vec!["Dietmar-Kranz-Straße 60/97\n00636 Rothenburg ob der Tauber"]
        );
        assert_eq!(
            found("my neighbour at C. Ángeles Perelló 8, Valladolid"),
            vec!["C. Ángeles Perelló 8, Valladolid"]
        );
        assert_eq!(
            found("Wir wohnen in der Hauptstraße 5, 10115 Berlin."),
            vec!["Hauptstraße 5, 10115 Berlin"]
        );
        assert_eq!(
            found("Adresse : 48, rue Lemoine\n75011 Paris"),
            vec!["48, rue Lemoine\n75011 Paris"]
        );
        assert_eq!(
            found("en Calle de Alcalá 136, 08008 Barcelona"),
            vec!["Calle de Alcalá 136, 08008 Barcelona"]
        );
        assert_eq!(
            found("ul. Kwiatowa 12/3\n00-123 Warszawa"),
            vec!["ul. Kwiatowa 12/3\n00-123 Warszawa"]
        );
        // A regnal number in the street's name.
        assert_eq!(
            found("send it to ul. Króla Jana III 5, 31-016 Kraków please"),
            vec!["ul. Króla Jana III 5, 31-016 Kraków"]
        );
        // A phone number on the next line is not a postcode of the address.
        assert_eq!(
            found("Bill to:\n12, rue des Lilas\n69003 Lyon\n0478-112 34\n"),
            vec!["12, rue des Lilas\n69003 Lyon"]
        );
        assert_eq!(
            found("Keizersgracht 249, 7884 HJ Eindhoven"),
            vec!["Keizersgracht 249, 7884 HJ Eindhoven"]
        );
        // A Portuguese postcode; a Spanish floor and door; a Polish flat.
        assert_eq!(
            found("Address: Rua Augusta 120, 1100-053 Lisboa"),
            vec!["Rua Augusta 120, 1100-053 Lisboa"]
        );
        assert_eq!(
            found("Deliver to Calle de Alcalá 45, 3º izq., 28014 Madrid"),
            vec!["Calle de Alcalá 45, 3º izq., 28014 Madrid"]
        );
        assert_eq!(
            found("Send to ul. Marszałkowska 84/92 m. 12, 00-514 Warszawa"),
            vec!["ul. Marszałkowska 84/92 m. 12, 00-514 Warszawa"]
        );
    }

    #[test]
    fn streets_without_numbers_and_cities_are_not_addresses() {
        assert!(found("Checkout fails with 502 Bad Gateway since 09:00.").is_empty());
        assert!(found("two start on Jun 17, 2022. Open roles").is_empty());
        assert!(found("we need 2 Front End developers").is_empty());
        assert!(found("Meet me at the Oxford Street store in London on 12 May.").is_empty());
        assert!(found("We paid $12 Main Street Bakery").is_empty());
    }
}
