//! People's names. A name has no checksum, so the place it stands in says most: after a title
//! (`Dr. Nowak`), in a greeting (`Hi Priya,`), under a sign-off (`Best regards,\nLukas
//! Schmidt`), as a chat speaker (`[10:42] Agent Tom:`), in a field (`Bill to: …`, `Reporter:
//! …`), after a phrase that introduces a person (`my name is`, `assigned to`, `my colleague`),
//! or before an e-mail address (`Ana Souza <ana@…>`). There, any capitalised words that are not
//! frequent English words are taken. Elsewhere a run of capitalised words is a name when the
//! name lists know its words (`Priya Raghunathan`, `Nguyen Thi Mai`), and a known first name
//! alone mid-sentence (`ask Priya`) is one too. Company names built from surnames (`Schmidt
//! GmbH`, `Johnson, Smith and Lee`) are not people.

use std::sync::LazyLock;

use regex::Regex;

use super::dictionary::{
    is_always_common, is_census_surname_word, is_common_word, is_english_word, is_english_word_first_name,
    is_english_word_surname, is_first_name, is_mostly_a_place, is_name, is_organisation_word, is_surname,
};
use super::text::regex;

/// A capitalised word: `Priya`, `O'Neil`, `McCarty`, `Min-jun`, `Łukasz`, `D'Angelo` (and
/// `GmbH`, so a company form is read whole).
const WORD: &str = r"\p{Lu}[\p{Ll}\p{M}]*(?:(?:['’]|-)?\p{Lu}?[\p{Ll}\p{M}]+)*\p{Lu}?";
/// Lower-case words inside names (`Ludwig van Beethoven`, `Ms. van Dijk`, `Saoirse Ní Bhriain`).
const PARTICLE: &str = r"(?:van|von|de|da|di|du|del|della|der|den|des|dos|das|do|le|la|bin|binti|ibn|al|el|ní|nic|mac|ter|ten|zu|y|e|af|av)";
/// A middle initial (`John F. Kennedy`).
const INITIAL: &str = r"\p{Lu}\.";

/// Up to four name words on one line, with particles and initials between them.
fn run() -> String {
    format!(
        r"(?:(?-u:\b){PARTICLE}[ \t]+)?{WORD}(?:[ \t]+(?:(?:{PARTICLE}[ \t]+){{1,2}}|{INITIAL}[ \t]+)?{WORD}){{0,3}}"
    )
}

const TITLES: &str = r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Lady|Lord|Madam|Mme|Mlle|Herr|Frau|Hr|Fr|Sr|Sra|Srta|Señor|Señora|Señorita|Don|Doña|Dña|Dott|Dott\.ssa|Sig|Sig\.ra|Signor|Signora|Pan|Pani|Ing|Mag|Mgr|Rev|Capt|Col|Sgt|Lt|Hon|Monsieur|Madame|Mademoiselle|Meneer|Mevrouw|Dhr|Mevr|Senhor|Senhora|Shri|Smt)";

/// Titles written in lower case mid-sentence in their languages (`meneer Bezemer`, `dr Ornat`,
/// `mevr. Mansvelt`).
const LOWER_CASE_TITLES: &str =
    r"(?:meneer|mevrouw|mevr|dhr|dr|herr|frau|monsieur|madame|señor|señora|senhor|senhora|signor|signora|pan|pani)";

/// How much a context vouches for the words after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Evidence {
    /// The place says a name follows: any capitalised word that is not a frequent English
    /// word is taken (a title, a greeting, a sign-off, a speaker, a name field).
    Strong,
    /// Someone addressed or signing: a greeting, a sign-off, a chat speaker. A person is named
    /// here even by a word that is also an English word (`Hi Rose,`, `Agent Max:`, `Cheers,\n
    /// Grant Bridson`), unless it is a word for a group (`Hi team`) or a phrase follows
    /// (`Thanks,\nBilling Department`).
    Addressed,
    /// A field that holds a person or a company (`Bill to:`, `From:`): a full name, or a first
    /// name alone; a single surname there is as often a firm (`Bill to: Rocher`).
    Field,
    /// A phrase that often introduces a person: one unknown word is not enough, two are, or a
    /// word the name lists know.
    Cue,
}

/// Labels of fields that hold a person (`Bill to:`, `Buddy:`, `Reporter:`).
const FIELD_LABELS: &str = r"name|full name|first name|last name|surname|given name|customer(?: name)?|client(?: name)?|employee(?: name)?|patient(?: name)?|contact(?: person| name)?|bill to|billed to|invoice to|invoiced to|buddy|mentor|cover|covered by|billing name|ship to|shipped to|sold to|deliver to|attn\.?|attention|recipient|addressee|from|to|cc|reporter|reported by|requester|requested by|raised by|opened by|submitted by|created by|assignee|assigned to|owner|approver|approved by|manager|line manager|supervisor|account holder|account name|cardholder|card holder|name on card|beneficiary|payee|payer|tenant|landlord|applicant|candidate|guest|passenger|driver|member|signed|signature|prepared by|author|sender|interviewer|interviewee|emergency contact|next of kin|spouse|dependant|dependent|referee|reviewer|agent|technician|engineer|doctor|physician|nurse|caseworker|case worker|hr contact|point of contact|poc|issued to|made out to|employee|staff member|worker|student|user|username|holder|insured|policyholder|claimant|witness";

/// A field label on its own (`Buddy:` opens a field, it is not a chat speaker named Buddy).
fn is_field_label(word: &str) -> bool {
    static LABEL: LazyLock<Regex> = LazyLock::new(|| regex(&format!("^(?i:{FIELD_LABELS})$")));
    LABEL.is_match(word)
}

/// `(pattern, evidence)`: each pattern's group 1 is where the name starts.
static CONTEXTS: LazyLock<Vec<(Regex, Evidence)>> = LazyLock::new(|| {
    // Where a context vouches for a name, it may open with initials (`Signed: J. R. Hartley`).
    let run = format!(r"(?:{INITIAL}[ \t]*){{0,3}}{}", run());
    let title = format!(r"(?-u:\b)(?:{TITLES}|{LOWER_CASE_TITLES})\.?[ \t]+({run})");
    let greeting = format!(
        r"(?m)(?:^|[.!?:][ \t]+)[ \t]*(?i:hi|hello|hey|dear|hiya|greetings|good (?:morning|afternoon|evening)|morning|afternoon|hallo|bonjour|bonsoir|hola|buenos días|buenas tardes|ciao|buongiorno|hej|hei|salut|guten tag|guten morgen|moin|servus|liebe|lieber|sehr geehrte|sehr geehrter|cher|chère|querido|querida|estimado|estimada|caro|cara|gentile|olá|oi|prezado|prezada|witam|dzień dobry|merhaba|xin chào|halo|hoi|goedemorgen|beste)(?-u:\b)[ \t,]+(?:{TITLES}\.?[ \t]+)?({run})"
    );
    let thanks = format!(
        r"(?i:(?-u:\b)thanks|(?-u:\b)thank you|(?-u:\b)cheers|(?-u:\b)thx|(?-u:\b)ta|(?-u:\b)many thanks|(?-u:\b)danke|(?-u:\b)merci|(?-u:\b)gracias|(?-u:\b)grazie|(?-u:\b)obrigad[oa]|(?-u:\b)dziękuję|(?-u:\b)tack|(?-u:\b)kiitos)[ \t]*,?[ \t]+({run})[ \t]*(?:[,.!]|$)"
    );
    let sign_off = r"(?m)^[ \t]*(?i:best(?: regards| wishes)?|kind regards|kindest regards|warm regards|warmest regards|regards|many thanks|thanks(?: again| so much| a lot)?|thank you(?: so much)?|cheers|sincerely|yours(?: sincerely| truly| faithfully)?|all the best|take care|talk soon|speak soon|respectfully|cordially|with thanks|br|mfg|mit freundlichen grüßen|mit freundlichen grüssen|viele grüße|beste grüße|liebe grüße|freundliche grüße|gruß|grüße|cordialement|bien cordialement|bien à vous|salutations|saludos(?: cordiales)?|un saludo|atentamente|cordiali saluti|distinti saluti|saluti|un saluto|met vriendelijke groet(?:en)?|vriendelijke groet(?:en)?|groeten|pozdrawiam|z poważaniem|med vänliga hälsningar|vänliga hälsningar|hälsningar|mvh|med venlig hilsen|venlig hilsen|hilsen|ystävällisin terveisin|terveisin|atenciosamente|abraços|cumprimentos|saygılarımla|cu stimă|s pozdravem|üdvözlettel|trân trọng)[ \t]*[,.!]?[ \t]*\r?\n(?:[ \t]*\r?\n)?[ \t]*(?:[-–—]+[ \t]*)?";
    let sign_off = format!(r"{sign_off}(?:{TITLES}\.?[ \t]+)?({run})");
    // `Thanks for chatting with us, Tümkurt!`, `Sorry for the wait, Ana.`: the person addressed
    // after a comma at the end of a thanks or an apology, or before an exclamation mark.
    let addressed_at_end = format!(
        r"(?m)(?:(?i:(?-u:\b)(?:thanks|thank you|sorry|welcome|congratulations|congrats|good luck|have a (?:nice|good|great) \w+))[^\n.!?]{{0,60}},[ \t]+({run})[ \t]*[.!?]?[ \t]*$|,[ \t]+({run})[ \t]*!)"
    );
    let dash_signature = format!(r"(?m)^[ \t]*(?:--|—|–)[ \t]*({run})[ \t]*$");
    // `[10:42] Agent Tom:`, `Customer Ana:` at the start of a chat line; `Tom Meyer:` alone
    // needs the name lists (`Acme Portal:` is a heading).
    let stamp = r"(?:\[[^\]\n]{1,24}\][ \t]*|\(?\d{1,2}:\d{2}(?::\d{2})?(?:[ \t]?[AaPp][Mm])?\)?[ \t]*(?:[-–][ \t]*)?)";
    let role = r"(?i:agent|customer|client|support|rep|operator|advisor|adviser|tech|technician|user|caller|guest|visitor|host|moderator|specialist|consultant)[ \t]+";
    let said = r"[ \t]*(?:\([^)\n]{1,30}\)[ \t]*)?:";
    let speaker = format!(r"(?m)^[ \t]*(?:{stamp}(?:{role})?|{role})({run}){said}");
    let bare_speaker = format!(r"(?m)^[ \t]*({run}){said}");
    let field = format!(
        r"(?m)(?:^|[;|])[ \t]*(?i:{FIELD_LABELS})[ \t]*(?:[:=]|[-–][ \t])[ \t]*(?:\r?\n[ \t]*)?(?:{TITLES}\.?[ \t]+)?({run})"
    );
    let introduced = format!(
        r"(?i:(?-u:\b)my name is|(?-u:\b)my name's|(?-u:\b)name is|(?-u:\b)i am|(?-u:\b)i'm|(?-u:\b)this is|(?-u:\b)called|(?-u:\b)named|(?-u:\b)signed|(?-u:\b)signed by|(?-u:\b)on behalf of|(?-u:\b)my (?:wife|husband|partner|son|daughter|mother|mum|mom|father|dad|brother|sister|friend|neighbou?r|landlord|tenant|doctor|lawyer|colleague|coworker|co-worker|manager|boss|supervisor|assistant|fianc[ée]e?|grandmother|grandfather|uncle|aunt|cousin|child|kid))[ \t]+({run})"
    );
    // `Comment (Lukáš, 3 Jul 2026):`: an author and a date after a ticket entry's label.
    let attributed = format!(
        r"(?i:(?-u:\b)(?:comment|update|note|reply|edit|answer|response|worklog))[ \t]*\(({run})[ \t]*,[^)\n]{{1,30}}\)"
    );
    // `Mefharet Çorlu requested leave`, `Jeevika Purohit / Kyllikki Lindholm`: a full name
    // before what people do, or beside another name.
    let acting = format!(
        r"({run})[ \t]+(?:requested|approved|asked|said|says|wrote|called|confirmed|reported|replied|agreed|signed|mentioned|raised|noted|explained|emailed|phoned|complained|joined|left|declined|accepted|rejected|submitted|booked|cancell?ed)(?-u:\b)"
    );
    let paired_before = format!(r"({run})[ \t]*/[ \t]*\p{{Lu}}");
    let paired_after = format!(r"\p{{L}}[ \t]*/[ \t]*({run})");
    // `Seydo Bey`, `Ayşe Hanım`: Turkish titles follow the name.
    let title_after = format!(r"({run})[ \t]+(?:Bey|Hanım|Hanim|Efendi)(?-u:\b)");
    let email_after = format!(r"({run})[ \t]*(?:<|\(|\[)[ \t]*(?:mailto:)?[A-Za-z0-9._%+-]+@");
    let cued = format!(
        r"(?i:(?-u:\b)spoke (?:to|with)|(?-u:\b)speak (?:to|with)|(?-u:\b)talk(?:ed)? (?:to|with)|(?-u:\b)ask(?:ed)? for|(?-u:\b)ask(?:ed)?|(?-u:\b)contact(?:ed)?|(?-u:\b)reach(?:ed)? out to|(?-u:\b)cc(?:'d|ed)?|(?-u:\b)copy(?:ing)?|(?-u:\b)forward(?:ed)? (?:it )?to|(?-u:\b)escalated? to|(?-u:\b)hand(?:ed)? (?:it )?over to|(?-u:\b)assigned? (?:it )?to|(?-u:\b)reassigned to|(?-u:\b)(?:update|comment|note|reply|message|call|email|e-mail|feedback|answer) from|(?-u:\b)same (?:issue|problem|error) as|(?-u:\b)(?:opened|closed|resolved|handled|owned|managed|escalated|signed|led|run|hosted|organi[sz]ed|booked) by|(?-u:\b)reported by|(?-u:\b)raised by|(?-u:\b)requested by|(?-u:\b)approved by|(?-u:\b)submitted by|(?-u:\b)created by|(?-u:\b)sent by|(?-u:\b)written by|(?-u:\b)colleague|(?-u:\b)coworker|(?-u:\b)co-worker|(?-u:\b)teammate|(?-u:\b)manager|(?-u:\b)supervisor|(?-u:\b)boss|(?-u:\b)customer|(?-u:\b)client|(?-u:\b)employee|(?-u:\b)patient|(?-u:\b)tenant|(?-u:\b)candidate|(?-u:\b)applicant|(?-u:\b)new hire|(?-u:\b)contractor|(?-u:\b)intern|(?-u:\b)agent|(?-u:\b)technician|(?-u:\b)engineer|(?-u:\b)nurse|(?-u:\b)doctor|(?-u:\b)consultant|(?-u:\b)recruiter|(?-u:\b)developer|(?-u:\b)analyst|(?-u:\b)director|(?-u:\b)head|(?-u:\b)lead|(?-u:\b)owner|(?-u:\b)user|(?-u:\b)member|(?-u:\b)guest|(?-u:\b)resident|(?-u:\b)student|(?-u:\b)teacher|(?-u:\b)parent|(?-u:\b)caller|(?-u:\b)driver|(?-u:\b)courier|(?-u:\b)welcome|(?-u:\b)congratulations to|(?-u:\b)meet|(?-u:\b)joined by|(?-u:\b)replacing|(?-u:\b)replace|(?-u:\b)covering for|(?-u:\b)behalf of|(?-u:\b)says|(?-u:\b)said|(?-u:\b)wife|(?-u:\b)husband|(?-u:\b)sister|(?-u:\b)brother|(?-u:\b)mother|(?-u:\b)father|(?-u:\b)daughter|(?-u:\b)son)[ \t]+({run})"
    );
    vec![
        (title, Evidence::Strong),
        (greeting, Evidence::Addressed),
        (thanks, Evidence::Strong),
        (sign_off, Evidence::Addressed),
        (dash_signature, Evidence::Addressed),
        (addressed_at_end, Evidence::Strong),
        (speaker, Evidence::Addressed),
        (bare_speaker, Evidence::Cue),
        (field, Evidence::Field),
        (introduced, Evidence::Strong),
        (email_after, Evidence::Strong),
        (attributed, Evidence::Strong),
        (acting, Evidence::Cue),
        (paired_before, Evidence::Cue),
        (paired_after, Evidence::Cue),
        (title_after, Evidence::Strong),
        (cued, Evidence::Cue),
    ]
    .into_iter()
    .map(|(pattern, evidence)| (regex(&pattern), evidence))
    .collect()
});

/// Runs of capitalised words anywhere, for the name lists to judge.
static RUNS: LazyLock<Regex> = LazyLock::new(|| regex(&run()));

/// Companies named after people: `Schmidt GmbH`, `Müller & Söhne`, `Johnson, Smith and Lee`,
/// `Lefèvre et Fils`, `Grupo García`.
static ORGANISATION: LazyLock<Regex> = LazyLock::new(|| {
    regex(&format!(
        r"{WORD}(?:(?:[ \t]+|[ \t]*,[ \t]*|[ \t]*-[ \t]*|[ \t]+(?:&|and|und|et|y|e|en|och|og|i)[ \t]+){WORD}){{1,4}}"
    ))
});

/// Firms and brands known by a person's name, too well known to be a customer's: the name
/// lists would read them as people (`Morgan Stanley`, `Tommy Hilfiger`).
static EPONYMOUS_FIRMS: LazyLock<Regex> = LazyLock::new(|| {
    const FIRMS: &[&str] = &[
        "Morgan Stanley",
        "Goldman Sachs",
        "JP Morgan",
        "J.P. Morgan",
        "Charles Schwab",
        "Wells Fargo",
        "Merrill Lynch",
        "Edward Jones",
        "Raymond James",
        "Lloyds",
        "Barclays",
        "Dow Jones",
        "Ernst & Young",
        "Arthur Andersen",
        "Booz Allen",
        "Deloitte",
        "Tommy Hilfiger",
        "Ralph Lauren",
        "Calvin Klein",
        "Hugo Boss",
        "Louis Vuitton",
        "Christian Dior",
        "Estée Lauder",
        "Estee Lauder",
        "Michael Kors",
        "Kate Spade",
        "Tory Burch",
        "Marc Jacobs",
        "Vera Wang",
        "Giorgio Armani",
        "Dolce & Gabbana",
        "Yves Saint Laurent",
        "Coco Chanel",
        "Harley-Davidson",
        "Harley Davidson",
        "Rolls-Royce",
        "Rolls Royce",
        "Aston Martin",
        "Mercedes-Benz",
        "Alfa Romeo",
        "Walt Disney",
        "Martha Stewart",
        "John Deere",
        "Johnson Controls",
        "Dr Pepper",
        "Dr. Pepper",
        "Ben & Jerry's",
        "Papa John's",
        "Wendy's",
        "McDonald's",
        "Johnnie Walker",
        "Jack Daniel's",
        "Jim Beam",
        "Paul Mitchell",
        "Marks & Spencer",
        "Sainsbury's",
        "John Lewis",
        "Dunkin' Donuts",
        "Baskin-Robbins",
        "Levi Strauss",
        "Levi's",
        "Adobe",
        "Mary Kay",
        "Victoria's Secret",
        "Thomson Reuters",
        "Bloomberg",
        "Warner Bros",
        "Hewlett-Packard",
        "Hewlett Packard",
        "Black & Decker",
        "Procter & Gamble",
        "Smith & Wesson",
        "Johnson & Johnson",
        "Bang & Olufsen",
        "Abercrombie & Fitch",
        "Tiffany & Co",
    ];
    let alternatives: Vec<String> = FIRMS.iter().map(|firm| regex::escape(firm)).collect();
    regex(&format!(r"(?-u:\b)(?:{})(?-u:\b)", alternatives.join("|")))
});

/// One word of a candidate name with its byte range in the text.
struct Word<'a> {
    text: &'a str,
    start: usize,
    end: usize,
}

fn words_of(text: &str, start: usize, end: usize) -> Vec<Word<'_>> {
    let mut words = Vec::new();
    let mut at = start;
    for piece in text[start..end].split([' ', '\t']) {
        // `Tanaka-san`: the honorific is not part of the name.
        let name = ["-san", "-sama", "-kun", "-chan", "-sensei", "-ssi", "-ji"]
            .iter()
            .find_map(|suffix| piece.strip_suffix(suffix))
            .unwrap_or(piece);
        if !name.is_empty() {
            words.push(Word {
                text: name,
                start: at,
                end: at + name.len(),
            });
        }
        at += piece.len() + 1;
    }
    words
}

fn is_particle(word: &str) -> bool {
    static PARTICLE_WORD: LazyLock<Regex> = LazyLock::new(|| regex(&format!("^{PARTICLE}$")));
    PARTICLE_WORD.is_match(word)
}

fn is_initial(word: &str) -> bool {
    word.len() <= 3 && word.ends_with('.') && word.starts_with(char::is_uppercase)
}

/// Words for a group of people after a greeting or under a sign-off: `Hi team`, `Hello
/// everyone`, `Regards,\nSupport`.
const ADDRESSED_GROUPS: &[&str] = &[
    "team",
    "all",
    "everyone",
    "everybody",
    "there",
    "folks",
    "guys",
    "both",
    "again",
    "colleagues",
    "friends",
    "sir",
    "madam",
    "customer",
    "customers",
    "support",
    "sales",
    "admin",
    "billing",
    "finance",
    "accounts",
    "hiring",
    "partners",
    "members",
    "users",
    "world",
    "community",
    "valued",
    "good",
    "morning",
    "afternoon",
    "evening",
    "back",
    "service",
    "desk",
    "care",
    "department",
    "operations",
    "management",
    "staff",
    "crew",
    "guest",
    "guests",
    "client",
    "clients",
    "people",
    "ladies",
    "gentlemen",
    "sirs",
    "helpdesk",
    "security",
    "payroll",
    "legal",
    "marketing",
    "engineering",
    "product",
    "leadership",
    "board",
    "committee",
    "office",
    "mates",
    "you",
    "thanks",
    "thank",
    "regards",
    "best",
    "kind",
    "warm",
    "many",
    "recruiter",
    "manager",
    "colleague",
    "user",
    "applicant",
    "candidate",
    "owner",
];

/// `I`, `I'm`, `I’ve`, `I'd`, `I'll`: capitalised, never a name.
fn is_first_person(word: &str) -> bool {
    match word.strip_prefix('I') {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix(['\'', '’'])
            .is_some_and(|suffix| matches!(suffix, "m" | "ve" | "d" | "ll")),
        None => false,
    }
}

/// The name at the start of `words` that `evidence` vouches for: capitalised words up to the
/// first frequent English word, with particles and initials only between name words.
///
/// `fills_slot`: nothing but the end of the line or a `:` `,` `(` `<` follows the words, as
/// in `[09:32] Beyda Seven:`, `Warm regards,\nIshanvi Bath`, `I'm Jun Fan,`: there the words
/// after a name word are the rest of that one name even when English knows them (`Seven`,
/// `Bath`, `Fan`).
fn name_in(words: &[Word<'_>], evidence: Evidence, after_title: bool, fills_slot: bool) -> Option<(usize, usize)> {
    // `Hi, I'm Radhika Das`: the writer's `I'm` opens no name (the phrase `I'm` finds it).
    if words.first().is_some_and(|w| is_first_person(w.text)) {
        return None;
    }
    let mut taken: Vec<&Word<'_>> = Vec::new();
    for (at, word) in words.iter().enumerate() {
        let text = word.text;
        if is_particle(text) || is_initial(text) {
            taken.push(word);
            continue;
        }
        // After a title even a word the English list knows is a surname (`Dr. Long`), but not
        // a weekday or a label (`Dr. note`).
        let relaxed = taken.is_empty() && (after_title || evidence == Evidence::Addressed);
        let common = if relaxed {
            is_always_common(text) && !(after_title && is_census_surname_word(text))
                || ADDRESSED_GROUPS.contains(&text.to_lowercase().as_str())
        } else {
            is_common_word(text)
        };
        // `Reporter: Joy Texier`, `Requester: Jan Mesjasz`: where a name is expected, an
        // English word opens a full name when a word that is no English word follows.
        let rest_of_the_name = fills_slot
            && !taken.is_empty()
            && evidence != Evidence::Cue
            && !is_always_common(text)
            && !ADDRESSED_GROUPS.contains(&text.to_lowercase().as_str());
        let stops = common && !rest_of_the_name || is_organisation_word(text);
        let opens_full_name = stops
            && taken.is_empty()
            && matches!(evidence, Evidence::Strong | Evidence::Field)
            && !is_always_common(text)
            && !ADDRESSED_GROUPS.contains(&text.to_lowercase().as_str())
            && words
                .get(at + 1)
                .is_some_and(|next| !is_common_word(next.text) && !is_organisation_word(next.text));
        if stops && !opens_full_name {
            // `Billing Department`: a word taken only because of where it stands, followed by an
            // ordinary word, was a phrase.
            if taken.len() == 1 && evidence == Evidence::Addressed && is_common_word(taken[0].text) {
                return None;
            }
            break;
        }
        taken.push(word);
    }
    while taken.last().is_some_and(|w| is_particle(w.text) || is_initial(w.text)) {
        taken.pop();
    }
    // `Ms. van Dijk`: a particle right after a title belongs to the name.
    while !after_title && taken.first().is_some_and(|w| is_particle(w.text)) {
        taken.remove(0);
    }
    let names: Vec<&&Word<'_>> = taken
        .iter()
        .filter(|w| !is_particle(w.text) && !is_initial(w.text))
        .collect();
    let first = names.first()?;
    let known = names.iter().filter(|w| is_name(w.text)).count();
    // `Signed: J. R. Hartley`, `approved by K. Oyelaran-Smith`: initials make a surname a person's.
    let initialled = taken.first().is_some_and(|w| is_initial(w.text));
    let vouched = match evidence {
        Evidence::Strong => true,
        Evidence::Addressed => !(names.len() == 1 && is_double_surname(first.text) && !after_title),
        Evidence::Field => {
            names.len() >= 2 || initialled || is_first_name(first.text) && !is_double_surname(first.text)
        }
        // `Kutgün said`: one word no list knows is enough when its letters are not English
        // ones, unless it heads a field (`Größe:`).
        Evidence::Cue => {
            (known > 0
                || names.len() >= 2
                || initialled
                || names.len() == 1 && !fills_slot && spelled_beyond_english(first.text))
                && !(names.len() == 1 && is_double_surname(first.text) && !initialled)
        }
    };
    vouched.then(|| {
        (
            taken.first().map_or(first.start, |w| w.start),
            taken.last().map_or(first.end, |w| w.end),
        )
    })
}

/// `Patient: O'Brien, Siobhan`: in a field, a single word before a comma and a listed first name
/// is the surname of a name written surname first.
fn surname_before_given_name(text: &str, words: &[Word<'_>], evidence: Evidence, end: usize) -> Option<(usize, usize)> {
    let [surname] = words else {
        return None;
    };
    let given = text[end..].strip_prefix(',')?.trim_start_matches([' ', '\t']);
    let given_end = given
        .find(|c: char| !c.is_alphabetic() && c != '-')
        .unwrap_or(given.len());
    let (given, after) = given.split_at(given_end);
    // The given name ends the field (`Siobhan (DOB …)`), unlike a firm's list of partners
    // (`Coppola, Ceri e Tognazzi Group`).
    let ends_the_field = after
        .trim_start_matches([' ', '\t'])
        .chars()
        .next()
        .is_none_or(|c| matches!(c, '\n' | '\r' | '(' | ',' | ';' | '|'));
    (evidence == Evidence::Field
        && ends_the_field
        && !is_common_word(surname.text)
        && !is_organisation_word(surname.text)
        && is_first_name(given))
    .then_some((surname.start, surname.end))
}

/// Names written in capitals in a field (`Name: JOHN SMITH`, `Cardholder: MARÍA GARCÍA LÓPEZ`):
/// two to four words, one of them a listed name, none an ordinary word the lists do not know
/// or a company's.
fn in_capitals(text: &str) -> Vec<(usize, usize)> {
    static CAPITALS: LazyLock<Regex> = LazyLock::new(|| {
        regex(&format!(
            r"(?m)(?:^|[;|])[ \t]*(?i:{FIELD_LABELS})[ \t]*(?:[:=]|[-–][ \t])[ \t]*(?:\r?\n[ \t]*)?(?:{TITLES}\.?[ \t]+)?((?:\p{{Lu}}[\p{{Lu}}\p{{M}}'’\-]+[ \t]+){{1,3}}\p{{Lu}}[\p{{Lu}}\p{{M}}'’\-]+)[ \t]*(?:$|[,;(|<])"
        ))
    });
    CAPITALS
        .captures_iter(text)
        .filter_map(|captures| captures.get(1))
        .filter(|name| {
            let words: Vec<&str> = name.as_str().split_whitespace().collect();
            words.iter().any(|w| is_name(w))
                && words
                    .iter()
                    .all(|w| (is_name(w) || !is_common_word(w)) && !is_organisation_word(w) && !is_always_common(w))
        })
        .map(|name| (name.start(), name.end()))
        .collect()
}

/// A word with a letter English spelling does not use (`Kutgün`, `Øster`), not a place.
fn spelled_beyond_english(word: &str) -> bool {
    word.chars().any(|c| c.is_alphabetic() && !c.is_ascii()) && !is_mostly_a_place(word)
}

/// A run found without a context: known names, or a known first name followed by
/// capitalised words that are not English words, or a known first name alone mid-sentence.
fn listed_name(text: &str, words: &[Word<'_>]) -> Option<(usize, usize)> {
    let mut best: Option<(usize, usize)> = None;
    let mut i = 0;
    while i < words.len() {
        // The longest stretch of non-common words from i.
        let mut j = i;
        while j < words.len() && !is_common_word(words[j].text) && !is_organisation_word(words[j].text) {
            j += 1;
        }
        // A census name that is also an English word completes a listed name beside it:
        // `Catherine Brown`, `Mark Cunningham` (not `Priya Support`, not `Mark Down`).
        let mut first = i;
        if j > i && i > 0 && is_english_word_first_name(words[i - 1].text) && is_surname(words[i].text) {
            first = i - 1;
        }
        if j > i && j < words.len() && is_first_name(words[j - 1].text) && is_english_word_surname(words[j].text) {
            j += 1;
        }
        let stretch = &words[first..j];
        let names: Vec<&Word<'_>> = stretch
            .iter()
            .filter(|w| !is_particle(w.text) && !is_initial(w.text))
            .collect();
        let first_names = names
            .iter()
            .filter(|w| is_first_name(w.text) || is_english_word_first_name(w.text))
            .count();
        let known = names
            .iter()
            .filter(|w| is_name(w.text) || is_english_word_surname(w.text) || is_english_word_first_name(w.text))
            .count();
        let accepted = !stretch.is_empty()
            && !names_a_place(text, words, first, j)
            && match names.len() {
                0 => false,
                1 => {
                    first_names == 1
                        && !is_mostly_a_place(names[0].text)
                        && !after_quantity(text, names[0].start)
                        && !is_double_surname(names[0].text)
                        && if at_sentence_start(text, names[0].start) {
                            // `Dolores asked for leave`: a first name, then the sentence goes on;
                            // not an English word that opens a sentence (`Chase the courier`).
                            followed_by_lower_word(text, names[0].end) && !is_english_word(names[0].text)
                        } else {
                            followed_by_lower_or_punct(text, names[0].end)
                        }
                }
                _ => first_names >= 1 && known >= 1 || known >= 2,
            };
        if accepted {
            let start = stretch
                .iter()
                .find(|w| !is_particle(w.text))
                .map_or(names[0].start, |w| w.start);
            let end = stretch
                .iter()
                .rev()
                .find(|w| !is_particle(w.text) && !is_initial(w.text))
                .map_or(names[0].end, |w| w.end);
            if best.is_none_or(|(s, e)| end - start > e - s) {
                best = Some((start, end));
            }
        }
        i = j.max(i + 1);
    }
    best
}

/// Words that make the name after them a place (`South Carlos`, `Port Laura`, `Santa Cruz`).
fn is_place_prefix(word: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "north", "south", "east", "west", "lake", "port", "new", "fort", "mount", "mt.", "saint", "st.", "sankt",
        "santa", "san", "são", "bad", "borgo", "bivio", "porto", "villa", "castel", "monte", "san.", "sainte", "upper",
        "lower", "great", "little", "old", "royal", "isle", "cape", "point", "glen",
    ];
    PREFIXES.contains(&word.to_lowercase().as_str())
}

/// Words after a name that make it a place or a street (`Christopher Ville`, `Steele Haven`,
/// `the Armstrong Burgs store`).
fn is_place_suffix(word: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        "blvd",
        "ave",
        "rd",
        "ln",
        "pkwy",
        "hwy",
        "ville",
        "haven",
        "burg",
        "burgs",
        "town",
        "city",
        "village",
        "heights",
        "park",
        "springs",
        "falls",
        "crossing",
        "throughway",
        "street",
        "road",
        "avenue",
        "lane",
        "drive",
        "court",
        "place",
        "way",
        "square",
        "boulevard",
        "terrace",
        "gardens",
        "hill",
        "hills",
        "view",
        "valley",
        "station",
        "airport",
        "bridge",
        "island",
        "islands",
        "county",
        "district",
        "region",
        "province",
        "mountains",
        "beach",
        "bay",
        "harbor",
        "harbour",
        "port",
        "center",
        "centre",
        "mall",
        "plaza",
        "stadium",
        "hall",
        "tower",
        "building",
        "campus",
        "store",
        "office",
        "branch",
        "shop",
        "warehouse",
        "plant",
        "factory",
        "site",
        "venue",
        "depot",
        "hub",
        "terminal",
        "hotel",
        "arena",
        "gallery",
        "museum",
        "library",
    ];
    SUFFIXES.contains(&word.to_lowercase().trim_end_matches(['.', ',']))
}

/// The stretch `words[i..j]` names a place: a place word before it in the run, a place or street
/// word after it (capitalised or not), or a street type before it (`chemin Geneviève David`).
fn names_a_place(text: &str, words: &[Word<'_>], i: usize, j: usize) -> bool {
    let before = i.checked_sub(1).map(|k| words[k].text);
    if before.is_some_and(is_place_prefix) {
        return true;
    }
    if words.get(j).is_some_and(|w| is_place_suffix(w.text)) {
        return true;
    }
    let (Some(first), Some(last)) = (words.get(i), words.get(j.saturating_sub(1))) else {
        return false;
    };
    // `Martin Luther King Jr. Blvd`: a suffix of the name does not end the street's name.
    let after_name = text[last.end..].trim_start_matches([' ', '\t']);
    let after_name = ["Jr.", "Sr.", "Jr", "Sr"]
        .iter()
        .find_map(|suffix| after_name.strip_prefix(suffix))
        .unwrap_or(after_name);
    let next_word = after_name
        .trim_start_matches([' ', '\t'])
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default();
    let previous_word = text[..first.start]
        .trim_end_matches([' ', '\t'])
        .rsplit(|c: char| c.is_whitespace())
        .next()
        .unwrap_or_default();
    is_place_suffix(next_word)
        || is_place_prefix(previous_word)
        || STREET_TYPES.contains(&previous_word.to_lowercase().as_str())
}

/// Street types written before a street name that may be a person's name.
const STREET_TYPES: &[&str] = &[
    "rue",
    "chemin",
    "avenue",
    "boulevard",
    "allée",
    "impasse",
    "place",
    "quai",
    "calle",
    "c.",
    "avenida",
    "paseo",
    "plaza",
    "camino",
    "via",
    "viale",
    "piazza",
    "corso",
    "vicolo",
    "strada",
    "rua",
    "travessa",
    "ul.",
    "al.",
    "pl.",
    "os.",
    "ulica",
    "aleja",
    "straße",
    "strasse",
    "street",
    "road",
    "avenue",
    "ronda",
    "pasaje",
    "cuesta",
    "carrer",
    "largo",
    "contrada",
    "borgo",
    "viale",
    "piazzale",
    "alameda",
    "rambla",
    "glorieta",
    "callejón",
];

/// `Wilson-Chambers`: two names joined that are not both first names (`Anne-Marie` is one
/// person): a firm (Faker's and many real
/// ones) more often than a person, who is named with a first name or a title.
fn is_double_surname(word: &str) -> bool {
    let parts: Vec<&str> = word.split('-').collect();
    parts.len() == 2
        && !parts
            .iter()
            .all(|part| is_first_name(part) || is_english_word_first_name(part))
        // `Ya-Ting`, `Cheng-En`: a syllable is a given name's, not a surname's.
        && parts.iter().all(|part| part.chars().count() >= 3)
}

/// At the start of the text, a line, or a sentence: where any word is capitalised.
fn at_sentence_start(text: &str, start: usize) -> bool {
    let before = text[..start].trim_end_matches([' ', '\t', '"', '\'', '(', '“', '*', '-', '•']);
    before.is_empty() || before.ends_with(['.', '!', '?', '\n', ':', ';', '>', ']'])
}

/// A first name alone is a name when the sentence goes on in lower case or stops (`ask Priya
/// about it`, `thanks to Priya.`), not when more capitalised words follow (`Priya Cloud Suite`).
fn followed_by_lower_or_punct(text: &str, end: usize) -> bool {
    let rest = text[end..].trim_start_matches([' ', '\t']);
    rest.is_empty()
        || rest.starts_with(|c: char| {
            c.is_lowercase() || matches!(c, ',' | '.' | '!' | '?' | ';' | ':' | ')' | '\n' | '\'' | '’' | '(')
        })
}

/// A lower-case word follows (`Dolores asked`), not punctuation or more capitals.
fn followed_by_lower_word(text: &str, end: usize) -> bool {
    let rest = text[end..].strip_prefix(' ').unwrap_or("");
    let word: String = rest.chars().take_while(|c| c.is_alphabetic()).collect();
    word.chars().count() >= 2 && word.chars().all(char::is_lowercase)
}

/// A match that is part of a longer word: `TE` of `NOTE`, `Ter` of `ÖsterTer`.
fn inside_a_word(text: &str, start: usize, end: usize) -> bool {
    text[..start].chars().next_back().is_some_and(char::is_alphanumeric)
        || text[end..].chars().next().is_some_and(char::is_alphanumeric)
}

/// A product on an order line: `2 x Morgan leather bag`.
fn after_quantity(text: &str, start: usize) -> bool {
    static QUANTITY: LazyLock<Regex> = LazyLock::new(|| regex(r"(?:^|\s)\d+[ \t]*[x×][ \t]*$"));
    let mut from = start.saturating_sub(12);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    QUANTITY.is_match(&text[from..start])
}

/// `Kelly Carrol` of `Kelly Carrol's`.
fn without_possessive(text: &str, (start, end): (usize, usize)) -> (usize, usize) {
    let span = &text[start..end];
    let trimmed = span
        .strip_suffix("'s")
        .or_else(|| span.strip_suffix("’s"))
        .unwrap_or(span);
    (start, start + trimmed.len())
}

/// Spans of company names built from names: capitalised words joined by spaces, commas, `&`,
/// `and` that end with (or start with) an organisation word, and three surnames in a list
/// (`Johnson, Smith and Lee`).
fn organisations(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    for m in ORGANISATION.find_iter(text) {
        // Read the last word whole: `S.A.`, not the `S` the name pattern stops at.
        let end = m.end()
            + text[m.end()..]
                .find(char::is_whitespace)
                .unwrap_or(text.len() - m.end());
        let value = &text[m.start()..end];
        let words: Vec<&str> = value
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|w| !w.is_empty())
            .collect();
        let last = words.last().copied().unwrap_or_default();
        let first = words.first().copied().unwrap_or_default();
        let followed = text[m.end()..].trim_start_matches([' ', ',']);
        let suffix_after = followed
            .split(|c: char| c.is_whitespace() || c == ',')
            .next()
            .is_some_and(is_organisation_word);
        // `Johnson, Smith and Lee`: three single names joined like a firm's (a greeting to three
        // people, `Hi Anna, Ben and Carl`, is not one).
        let capitalised = words.iter().filter(|w| w.starts_with(char::is_uppercase)).count();
        let line_start = text[..m.start()].rfind('\n').map_or(0, |n| n + 1);
        let greeted = GREETING_WORD.is_match(&text[line_start..m.start()]);
        let listed_firm = value.contains(',')
            && words.iter().any(|w| ["and", "&", "und", "et", "y", "e"].contains(w))
            && capitalised == 3
            && !greeted;
        // `Johnson & Johnson`, `Marks & Spencer`: two single names joined by an ampersand are a
        // firm, unless both are given names (`Anna & Ben`).
        let ampersand_pair =
            words.len() == 3 && words[1] == "&" && !(is_first_name(words[0]) && is_first_name(words[2]));
        if listed_firm || ampersand_pair || is_organisation_word(first) {
            spans.push((m.start(), m.end()));
        } else if is_organisation_word(last) || suffix_after {
            // The firm is the part after the last comma: `Hi Ken, Stoppani s.r.l.`.
            // (A comma after the form, `S/A,`, is not inside the match and does not count.)
            let start = m.as_str().rfind(',').map_or(m.start(), |comma| m.start() + comma + 1);
            spans.push((start, m.end()));
        }
    }
    // Not `Morgan Stanley-Reed`, a person's double surname.
    spans.extend(
        EPONYMOUS_FIRMS
            .find_iter(text)
            .filter(|m| !text[m.end()..].starts_with(|c: char| c == '-' || c.is_alphanumeric()))
            .map(|m| (m.start(), m.end())),
    );
    // A single name right before an organisation word: `Schmidt GmbH`, `Keller Bau`.
    static SINGLE: LazyLock<Regex> = LazyLock::new(|| regex(&format!(r"{WORD}(?:[ \t]*&[ \t]*{WORD})?[ \t]+\S+")));
    for m in SINGLE.find_iter(text) {
        if m.as_str().split_whitespace().last().is_some_and(is_organisation_word) {
            spans.push((m.start(), m.end()));
        }
    }
    spans
}

pub(super) fn people(text: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    for (pattern, evidence) in CONTEXTS.iter() {
        for captures in pattern.captures_iter(text) {
            let Some(name) = captures.get(1).or_else(|| captures.get(2)) else {
                continue;
            };
            // `JO` of `JOHN SMITH` is not a name (capitals are read by `in_capitals`).
            if is_field_label(name.as_str().trim()) || inside_a_word(text, name.start(), name.end()) {
                continue;
            }
            let before = &text[captures.get(0).map_or(name.start(), |m| m.start())..name.start()];
            let after_title = before.trim_end().ends_with('.') || TITLE_AT_END.is_match(before);
            let words = words_of(text, name.start(), name.end());
            let fills_slot = text[name.end()..]
                .trim_start_matches([' ', '\t'])
                .chars()
                .next()
                .is_none_or(|next| matches!(next, '\n' | '\r' | ':' | ',' | '(' | '<'));
            let named = name_in(&words, *evidence, after_title, fills_slot);
            found.extend(named.or_else(|| surname_before_given_name(text, &words, *evidence, name.end())));
        }
    }
    found.extend(in_capitals(text));
    // The runs of capitalised words, read once: judged by the name lists here, searched for
    // later mentions of the names found below.
    let runs: Vec<Vec<Word<'_>>> = RUNS
        .find_iter(text)
        .filter(|run| !inside_a_word(text, run.start(), run.end()))
        .map(|run| words_of(text, run.start(), run.end()))
        .collect();
    for words in &runs {
        found.extend(listed_name(text, words));
    }
    found.extend(paired_with_a_name(text, &found));
    let organisations = organisations(text);
    let mut found: Vec<(usize, usize)> = found
        .into_iter()
        .map(|span| without_possessive(text, span))
        .filter(|&(start, end)| end > start)
        .filter(|&(start, end)| !organisations.iter().any(|&(s, e)| start < e && s < end))
        .collect();
    found.extend(mentioned_again(text, &runs, &found, &organisations));
    found.sort();
    merge_overlapping(found)
}

/// `1:1 notes — Nazi Zengin / Jaan Ploom`: beside a name found, across a slash, a full name
/// of capitalised words is a person too, even when English knows its words (`Tea Wenzl`).
fn paired_with_a_name(text: &str, found: &[(usize, usize)]) -> Vec<(usize, usize)> {
    static PAIR: LazyLock<Regex> = LazyLock::new(|| regex(&format!(r"({run})[ \t]*/[ \t]*({run})", run = run())));
    let overlaps = |m: &regex::Match<'_>| found.iter().any(|&(s, e)| s < m.end() && m.start() < e);
    let mut paired = Vec::new();
    for captures in PAIR.captures_iter(text) {
        let (Some(left), Some(right)) = (captures.get(1), captures.get(2)) else {
            continue;
        };
        for (named, other) in [(left, right), (right, left)] {
            let words = words_of(text, other.start(), other.end());
            let full_name = words.len() >= 2
                && words
                    .iter()
                    .all(|w| !is_always_common(w.text) && !is_organisation_word(w.text));
            if overlaps(&named) && !overlaps(&other) && full_name {
                paired.push((other.start(), other.end()));
            }
        }
    }
    paired
}

/// Every other mention of a name already found, whole or in part (`Dolores Lucero` …
/// `Dolores asked` … `Mr. Lucero`): once a text names a person, the same words elsewhere in it
/// are that person.
fn mentioned_again(
    text: &str,
    runs: &[Vec<Word<'_>>],
    found: &[(usize, usize)],
    organisations: &[(usize, usize)],
) -> Vec<(usize, usize)> {
    let mut names: Vec<&str> = Vec::new();
    for &(start, end) in found {
        for word in text[start..end].split_whitespace() {
            let word = word.trim_end_matches(['.', ',']);
            if word.chars().count() >= 2
                && !is_particle(word)
                && !is_initial(word)
                && !is_always_common(word)
                && !ADDRESSED_GROUPS.contains(&word.to_lowercase().as_str())
                && !names.contains(&word)
            {
                names.push(word);
            }
        }
    }
    let mut again = Vec::new();
    for word in runs.iter().flatten() {
        let known = names.contains(&word.text) || names.contains(&word.text.trim_end_matches("'s"));
        let inside = |spans: &[(usize, usize)]| spans.iter().any(|&(s, e)| word.start < e && s < word.end);
        if known && !inside(found) && !inside(organisations) {
            again.push(without_possessive(text, (word.start, word.end)));
        }
    }
    again
}

static GREETING_WORD: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"(?i)(?-u:\b)(?:hi|hello|hey|dear|thanks|thank you|cheers|welcome|congratulations)(?-u:\b)")
});

static TITLE_AT_END: LazyLock<Regex> =
    LazyLock::new(|| regex(&format!(r"(?-u:\b)(?:{TITLES}|{LOWER_CASE_TITLES})\.?[ \t]+$")));

fn merge_overlapping(spans: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
    for (start, end) in spans {
        match merged.last_mut() {
            Some(last) if start < last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<&str> {
        crate::text::slices(text, people(text))
    }

    #[test]
    fn a_firm_followed_by_a_comma_is_a_firm() {
        assert!(found("Issued by: Peixoto Marques S/A, Bielsk Podlaski").is_empty());
        assert!(found("From: Johansson Laukkanen ry · VAT ID FR19921404406").is_empty());
    }

    #[test]
    fn a_field_label_is_not_a_speaker() {
        assert_eq!(
            found("Start: Monday.\nBuddy: Mona Olsen. First day: Sunday."),
            vec!["Mona Olsen"]
        );
    }

    #[test]
    fn names_by_place() {
        assert_eq!(found("Hi Priya,\nthe laptop is ready."), vec!["Priya"]);
        assert_eq!(found("Dear Mr. Okafor, thank you."), vec!["Okafor"]);
        assert_eq!(
            found("Thanks for the help.\n\nBest regards,\nŁukasz Wiśniewski\nAcme Sp. z o.o."),
            vec!["Łukasz Wiśniewski"]
        );
        assert_eq!(found("[10:42] Agent Tom: how can I help?"), vec!["Tom"]);
        assert_eq!(
            found("Bill to:\nSøren Kjærgaard\n12 Main Street"),
            vec!["Søren Kjærgaard"]
        );
        assert_eq!(found("Reported by: Nguyễn Văn Minh"), vec!["Nguyễn Văn Minh"]);
        assert_eq!(found("Please ask Priya about it."), vec!["Priya"]);
        assert_eq!(
            found("Dr. Lindqvist said that Mary Johnson will call."),
            vec!["Lindqvist", "Mary Johnson"]
        );
        assert_eq!(found("Write to Ana Souza <ana@example.com>."), vec!["Ana Souza"]);
        // The writer's `I'm` is no part of the name it introduces.
        assert_eq!(
            found("hello, I'm Meera Shah, my card was charged twice"),
            vec!["Meera Shah"]
        );
        // A name that fills its slot keeps its English-word surname.
        assert_eq!(found("[08:15] Lerato Bell: good morning"), vec!["Lerato Bell"]);
        assert_eq!(found("Kind regards,\nAmara Stone\nAccounts"), vec!["Amara Stone"]);
    }

    #[test]
    fn names_by_what_surrounds_them() {
        assert_eq!(
            found("1:1 notes — Catherine Brown / Jeevika Purohit"),
            vec!["Catherine Brown", "Jeevika Purohit"]
        );
        assert_eq!(found("Reporter: Joy Texier"), vec!["Joy Texier"]);
        // Across a slash from a name, a full name even of English words.
        assert_eq!(
            found("Weekly sync — Graham Fletcher / Hope Marsh — notes"),
            vec!["Graham Fletcher", "Hope Marsh"]
        );
        assert_eq!(found("Good morning Ya-Ting,\nthe order shipped."), vec!["Ya-Ting"]);
        assert_eq!(found("Hi Tanaka-san,\nthanks."), vec!["Tanaka"]);
        assert_eq!(found("Dear meneer Bezemer,"), vec!["Bezemer"]);
        assert_eq!(found("Comment (Lukáš, 3 Jul 2026): restarted."), vec!["Lukáš"]);
        assert_eq!(found("Mefharet Çorlu requested unpaid leave."), vec!["Mefharet Çorlu"]);
        assert_eq!(
            found("the account was opened by Adetoke Ojua, so"),
            vec!["Adetoke Ojua"]
        );
        assert_eq!(found("review with Seydo Bey on Monday"), vec!["Seydo"]);
        // `e` of `name` is not the particle `e`.
        assert_eq!(found("update: name Jürgen Hoffmann, email"), vec!["Jürgen Hoffmann"]);
        // After a title, a census surname that also heads streets.
        assert_eq!(found("Comment: assigned to Dr Lane."), vec!["Lane"]);
        // One unlisted word before a verb of speech, spelled with letters English lacks.
        assert_eq!(found("Kutgün said on the phone that a refund follows."), vec!["Kutgün"]);
        // Addressed at the end of a thanks, or before an exclamation mark.
        assert_eq!(found("Thanks for chatting with us, Tümkurt!"), vec!["Tümkurt"]);
        assert_eq!(found("Sorry for the long wait, Oyelaran."), vec!["Oyelaran"]);
        // Initials before a surname; a surname written first; a name in capitals.
        assert_eq!(found("Signed: J. R. Hartley"), vec!["J. R. Hartley"]);
        assert_eq!(
            found("It was approved by K. Oyelaran-Smith on 3 May."),
            vec!["K. Oyelaran-Smith"]
        );
        assert_eq!(
            found("Patient: O'Brien, Siobhan (DOB 04/03/1981)"),
            vec!["O'Brien", "Siobhan"]
        );
        assert_eq!(
            found("Name: JOHN SMITH\nCardholder: MARÍA GARCÍA LÓPEZ"),
            vec!["JOHN SMITH", "MARÍA GARCÍA LÓPEZ"]
        );
    }

    #[test]
    fn not_names() {
        for text in [
            "The Customer Support Team in New York opened on Monday.",
            "Dear Customer, your order shipped.",
            "Hi team, the VPN is down.",
            "Invoice from Schmidt GmbH for the Johnson, Smith and Lee account.",
            "Will the March invoice arrive? Grace period ends Friday.",
            "CREDIT NOTE\nRefers to invoice F0413917.",
            "2 x Morgan leather bag  143,82 EUR",
            "From: Tähtinen Räsänen Ky · VAT ID GB132881161",
            "Mark Down the price; Rose Garden opens.",
            "Größe: XL\nFarbe: Blau",
            "Thanks for your order, see you soon!",
            "Status: OPEN PENDING\nBill to: ACME CORP",
            "From: Coppola, Ceri e Tognazzi Group",
            "Johnson & Johnson and Morgan Stanley reported earnings.",
            "The Martin Luther King Jr. Blvd store closes in June.",
            "Ordered a Tommy Hilfiger jacket.",
        ] {
            assert!(found(text).is_empty(), "{text}: {:?}", found(text));
        }
    }
}
