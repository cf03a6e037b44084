//! Pseudonyms for the people who ask: audit events and cost-control keys name a user without
//! naming them. Below every module that needs one (audit, cost control), so neither depends on
//! the other for it.

/// A stable pseudonym for a user of a tenant: user ids are often e-mail addresses, which must
/// not reach the audit topic, but analysts still need to tell users apart.
pub fn user_ref(tenant: &str, user: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::new()
        .chain_update(tenant.as_bytes())
        .chain_update([0u8])
        .chain_update(user.as_bytes())
        .finalize();
    digest[..8].iter().map(|byte| format!("{byte:02x}")).collect()
}
