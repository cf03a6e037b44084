//! URLs that identify a person: profile links (`linkedin.com/in/anna-kowalski`,
//! `github.com/jdoe42`, `mastodon.social/@anna`), paths with a user id or a name
//! (`/users/48213`, `/team/anna-kowalski`) and queries that carry one (`?user_id=93812`,
//! `?email=…`). Company, product and documentation links are left alone.

use std::sync::LazyLock;

use regex::Regex;

use super::dictionary;
use super::text::regex;

static URL: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r#"(?i)\b(?:https?://|www\.|(?:linkedin|github|gitlab|twitter|facebook|instagram)\.com/)[^\s<>"'`\]\[{}|\\^]+"#,
    )
});

/// Sites whose first path segment (or the one after `in/`, `@`, `u/`…) is a person's handle.
const PROFILE_SITES: &[&str] = &[
    "linkedin.com",
    "github.com",
    "gitlab.com",
    "bitbucket.org",
    "twitter.com",
    "x.com",
    "facebook.com",
    "fb.com",
    "instagram.com",
    "tiktok.com",
    "youtube.com",
    "medium.com",
    "t.me",
    "wa.me",
    "about.me",
    "keybase.io",
    "calendly.com",
    "threads.net",
    "pinterest.com",
    "reddit.com",
    "stackoverflow.com",
    "xing.com",
    "vk.com",
    "behance.net",
    "dribbble.com",
    "flickr.com",
    "soundcloud.com",
    "twitch.tv",
    "patreon.com",
    "linktr.ee",
    "bsky.app",
    "orcid.org",
    "researchgate.net",
    "gravatar.com",
    "mastodon.social",
    "substack.com",
    "telegram.me",
    "snapchat.com",
    "quora.com",
    "kaggle.com",
    "angel.co",
    "wellfound.com",
    "upwork.com",
    "fiverr.com",
    "tumblr.com",
    "skype.com",
];

/// First path segments of profile sites that are pages, not people.
const SITE_PAGES: &[&str] = &[
    "",
    "home",
    "login",
    "signup",
    "join",
    "about",
    "help",
    "explore",
    "search",
    "settings",
    "privacy",
    "terms",
    "share",
    "sharer",
    "intent",
    "hashtag",
    "i",
    "company",
    "companies",
    "school",
    "jobs",
    "pages",
    "groups",
    "watch",
    "results",
    "feed",
    "legal",
    "policies",
    "business",
    "features",
    "pricing",
    "enterprise",
    "topics",
    "marketplace",
    "orgs",
    "organizations",
    "sponsors",
    "security",
    "contact",
    "docs",
    "apps",
    "collections",
    "events",
    "trending",
    "readme",
    "site",
    "blog",
    "news",
    "questions",
    "tags",
    "r",
    "channel",
    "playlist",
    "results",
    "status",
    "notifications",
    "messages",
    "posts",
    "learning",
    "showcase",
    "products",
    "solutions",
    "customer-stories",
    "support",
];

/// Path segments followed by a person's id or name (`/users/48213`).
const PERSON_SEGMENTS: &[&str] = &[
    "users",
    "user",
    "u",
    "profile",
    "profiles",
    "people",
    "person",
    "persons",
    "members",
    "member",
    "employees",
    "employee",
    "staff",
    "customers",
    "customer",
    "contacts",
    "contact",
    "patients",
    "patient",
    "accounts",
    "account",
    "clients",
    "client",
    "team",
    "authors",
    "author",
    "students",
    "student",
    "candidates",
    "candidate",
    "applicants",
    "applicant",
    "agents",
    "agent",
    "in",
    "pub",
    "directory",
    "colleagues",
    "leads",
    "lead",
    "tenants",
    "guests",
    "guest",
    "owners",
    "owner",
    "speakers",
    "speaker",
    "physicians",
    "doctors",
    "doctor",
];

/// Query parameters whose value is a person or a person's id.
const PERSON_PARAMETERS: &[&str] = &[
    "user",
    "user_id",
    "userid",
    "uid",
    "username",
    "user_name",
    "login",
    "name",
    "fullname",
    "full_name",
    "first_name",
    "last_name",
    "email",
    "mail",
    "e-mail",
    "customer",
    "customer_id",
    "customerid",
    "cust_id",
    "member",
    "member_id",
    "memberid",
    "patient",
    "patient_id",
    "patientid",
    "employee",
    "employee_id",
    "emp_id",
    "empid",
    "contact",
    "contact_id",
    "contactid",
    "account_id",
    "accountid",
    "person",
    "person_id",
    "personid",
    "profile",
    "profile_id",
    "candidate_id",
    "applicant_id",
    "student_id",
    "phone",
    "msisdn",
];

/// Handles of organisations and teams, not people (`/@acme-support`).
fn names_a_team(handle: &str) -> bool {
    const TEAM_WORDS: &[&str] = &[
        "support",
        "team",
        "help",
        "news",
        "official",
        "info",
        "admin",
        "sales",
        "hq",
        "app",
        "bot",
        "status",
        "dev",
        "devs",
        "eng",
        "engineering",
        "blog",
        "press",
        "careers",
        "jobs",
        "security",
        "ops",
        "labs",
        "inc",
        "corp",
        "company",
        "org",
        "service",
        "services",
    ];
    handle
        .to_lowercase()
        .split(['-', '_', '.'])
        .any(|part| TEAM_WORDS.contains(&part))
}

/// `anna-kowalski`, `john.smith`, `maria_lopez`: a first name and another name.
fn names_a_person(segment: &str) -> bool {
    let parts: Vec<&str> = segment
        .split(['-', '_', '.'])
        .filter(|p| p.chars().all(char::is_alphabetic) && p.chars().count() >= 2)
        .collect();
    parts.len() >= 2
        && (dictionary::is_first_name(parts[0]) || dictionary::is_surname(parts[0]))
        && (dictionary::is_surname(parts[1]) || dictionary::is_first_name(parts[1]))
}

fn identifies_a_person(url: &str) -> bool {
    let lower = url.to_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .unwrap_or(&lower);
    let (host_and_path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let host_and_path = host_and_path.split('#').next().unwrap_or_default();
    let (host, path) = host_and_path.split_once('/').unwrap_or((host_and_path, ""));
    let host = host.split(':').next().unwrap_or_default();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let on_profile_site = PROFILE_SITES
        .iter()
        .any(|site| host == *site || host.ends_with(&format!(".{site}")));
    if on_profile_site {
        if let Some(first) = segments.first() {
            let handle = first.trim_start_matches('@');
            if !SITE_PAGES.contains(&handle) && !names_a_team(handle) {
                return true;
            }
        }
    }
    for pair in segments.windows(2) {
        if PERSON_SEGMENTS.contains(&pair[0]) && !pair[1].is_empty() && !SITE_PAGES.contains(&pair[1]) {
            return true;
        }
    }
    let handle_or_name = segments.iter().any(|segment| {
        let handle = segment
            .strip_prefix('@')
            .or_else(|| segment.strip_prefix('~'))
            .filter(|h| h.chars().next().is_some_and(char::is_alphabetic));
        handle.is_some_and(|h| !names_a_team(h)) || names_a_person(segment)
    });
    let person_parameter = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .any(|(key, value)| !value.is_empty() && PERSON_PARAMETERS.contains(&key));
    handle_or_name || person_parameter
}

/// Every person-identifying URL in `text`, without the punctuation that follows a URL in prose.
pub(super) fn person_urls(text: &str) -> Vec<(usize, usize)> {
    URL.find_iter(text)
        .filter_map(|m| {
            let trimmed = m
                .as_str()
                .trim_end_matches(['.', ',', ';', ':', '!', '?', ')', '"', '\'', '>']);
            identifies_a_person(trimmed).then_some((m.start(), m.start() + trimmed.len()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<&str> {
        crate::text::slices(text, person_urls(text))
    }

    #[test]
    fn profile_links_and_ids() {
        for url in [
            "https://www.linkedin.com/in/anna-kowalski-3b2a1",
            "https://github.com/jdoe42",
            "https://mastodon.social/@anna",
            "https://crm.example.net/contacts?id=93812&name=maria.lopez",
            "https://example.com/users/48213",
            "https://intranet.example.org/team/maria-lopez",
            "https://portal.example.com/view?customer_id=77120",
        ] {
            let text = format!("See {url}.");
            assert_eq!(found(&text), vec![url], "{url}");
        }
    }

    #[test]
    fn company_and_docs_links_are_not_people() {
        for url in [
            "https://docs.example.com/api/v2/errors",
            "https://status.example.io",
            "https://www.linkedin.com/company/acme",
            "https://blog.example.com/@acme-support/outage-report",
            "https://github.com/features/actions",
            "https://example.com/pricing?plan=team",
        ] {
            assert!(found(url).is_empty(), "{url}");
        }
    }
}
