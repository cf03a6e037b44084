//! `mask_pii`: replaces personal data in a question with numbered placeholders before anything
//! else sees it, and starts the answer draft the later stages fill in.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use super::StageBuilder;
use crate::audit::Subject;
use crate::contracts::{AnswerDraft, AnswerStatus, Question};
use crate::core_api::{MessageContext, Payload, Record, Stage};
use crate::error::Findings;
use crate::error::{ConfigError, StageError};
use crate::pii::{Detector, PiiKind, PiiScope};

/// What happens to a kind of personal data found in a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PiiAction {
    /// Replace it with a placeholder (restored in the answer).
    Mask,
    /// Refuse the question: the answer has status `blocked`, no model is called.
    Block,
    /// Leave it in the text (it reaches the model).
    Allow,
}

/// A PII policy: which kinds to look for and what to do with each. Flattened into the stage's
/// settings (the default policy) and into each tenant's ([`TenantPolicy`]).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PiiPolicy {
    /// Kinds looked for (default: all of `email`, `phone`, `card`, `iban`, `ssn`, `ip`,
    /// `url_credentials`, `url`, `dob`, `person`, `address`). A kind not looked for is not masked.
    pub entities: Option<BTreeSet<PiiKind>>,
    /// Action per kind; kinds not listed are masked.
    #[serde(default)]
    pub actions: BTreeMap<PiiKind, PiiAction>,
    /// Region whose national phone numbers (no `+`) are tried first, e.g. `US`, `GB`; the
    /// most common regions (US, UK, the EU's, India, Brazil, Japan…) are tried after it, so
    /// national numbers are recognised without it too.
    pub phone_region: Option<String>,
}

/// A tenant's policy: it replaces the default policy entirely.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPolicy {
    #[serde(flatten)]
    pub policy: PiiPolicy,
}

/// Masks personal data in questions (the output of `decode_question`) and starts the answer
/// draft. The placeholder map stays in the message's context, never in the record.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskPiiConfig {
    /// The policy of tenants not listed in `tenants`: `entities`, `actions`, `phone_region`.
    #[serde(flatten)]
    pub default_policy: PiiPolicy,
    /// Policies of particular tenants (each replaces the default policy entirely).
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantPolicy>,
}

fn region(code: &str) -> Option<phonenumber::country::Id> {
    code.parse().ok()
}

/// A policy ready to apply.
#[derive(Debug)]
struct CompiledPolicy {
    detector: Arc<Detector>,
    blocked: BTreeSet<PiiKind>,
}

impl PiiPolicy {
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        if let Some(code) = &self.phone_region {
            if region(code).is_none() {
                errors.report(
                    path,
                    "phone_region",
                    format!("`{code}` is not an ISO 3166 region code (e.g. US, GB, DE)"),
                );
            }
        }
    }

    fn compile(&self) -> CompiledPolicy {
        let looked_for = self
            .entities
            .clone()
            .unwrap_or_else(|| PiiKind::ALL.into_iter().collect());
        let action = |kind: &PiiKind| self.actions.get(kind).copied().unwrap_or(PiiAction::Mask);
        let detected: BTreeSet<PiiKind> = looked_for
            .iter()
            .copied()
            .filter(|k| action(k) != PiiAction::Allow)
            .collect();
        let blocked = detected
            .iter()
            .copied()
            .filter(|k| action(k) == PiiAction::Block)
            .collect();
        let phone_region = self.phone_region.as_deref().and_then(region);
        CompiledPolicy {
            detector: Arc::new(Detector::new(detected, phone_region)),
            blocked,
        }
    }
}

impl StageBuilder for MaskPiiConfig {
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        self.default_policy.validate(path, errors);
        for (tenant, TenantPolicy { policy }) in &self.tenants {
            policy.validate(&format!("{path}.tenants.{tenant}"), errors);
        }
    }

    fn build(&self) -> Result<Box<dyn Stage>, StageError> {
        Ok(Box::new(MaskPii {
            default_policy: self.default_policy.compile(),
            tenants: self
                .tenants
                .iter()
                .map(|(t, p)| (t.clone(), p.policy.compile()))
                .collect(),
        }))
    }
}

struct MaskPii {
    default_policy: CompiledPolicy,
    tenants: BTreeMap<String, CompiledPolicy>,
}

#[async_trait]
impl Stage for MaskPii {
    async fn process(&self, record: Record, context: &MessageContext) -> Result<Vec<Record>, StageError> {
        let question: Question = record.payload.typed("a question (put decode_question first)")?;
        let policy = self.tenants.get(&question.tenant).unwrap_or(&self.default_policy);
        // A retry of this stage finds the scope already set: reuse it, so placeholders keep
        // their numbers.
        let scope = context.extension_or_insert_with(|| PiiScope::new(policy.detector.clone()));
        let (masked, counts) = scope.mask(&question.question);
        let blocked: Vec<&str> = counts
            .keys()
            .filter(|kind| policy.blocked.contains(kind))
            .map(|kind| kind.label())
            .collect();
        let mut draft = AnswerDraft {
            options: question.options,
            pii_counts: counts.iter().map(|(kind, n)| (kind.label().to_owned(), *n)).collect(),
            ..AnswerDraft::new(
                &question.tenant,
                &question.request_id,
                &question.user,
                question.task,
                &masked,
            )
        };
        // From here on a failure is answered (status failed), not only dead-lettered.
        context.set_failure_report(Arc::new(Subject::Question {
            tenant: draft.tenant.clone(),
            request_id: draft.request_id.clone(),
            user: draft.user.clone(),
            task: draft.task,
            masked_question: draft.question.clone(),
        }));
        if !blocked.is_empty() {
            draft.decide(
                AnswerStatus::Blocked,
                Some(format!(
                    "the question contains personal data the tenant's policy does not allow to be processed: {}",
                    blocked.join(", ")
                )),
            );
        }
        let payload = Payload::holding(&draft, "the answer draft")?;
        Ok(vec![Record { payload, ..record }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::Task;

    fn question(tenant: &str, text: &str) -> Record {
        let question = Question {
            schema_version: 1,
            request_id: "r1".into(),
            tenant: tenant.into(),
            user: "u1".into(),
            question: text.into(),
            task: Task::Qa,
            options: None,
            metadata: BTreeMap::new(),
        };
        Record {
            key: Some(b"r1".to_vec()),
            payload: Payload::from_typed(&question).unwrap(),
            headers: Vec::new(),
            sink: None,
        }
    }

    async fn run(config: &str, tenant: &str, text: &str) -> (AnswerDraft, MessageContext) {
        let config: MaskPiiConfig = serde_yaml::from_str(config).unwrap();
        let stage = config.build().unwrap();
        let context = MessageContext::new("q".into(), "questions".into(), 0, 1, None);
        let out = stage.process(question(tenant, text), &context).await.unwrap();
        let draft: AnswerDraft = out.into_iter().next().unwrap().payload.into_typed().unwrap();
        (draft, context)
    }

    #[tokio::test]
    async fn masks_and_keeps_the_originals_in_the_context_only() {
        let (draft, context) = run(
            "{}",
            "acme",
            "I am Mary Johnson, mail mary@example.com about card 4111 1111 1111 1111",
        )
        .await;
        assert_eq!(draft.question, "I am [PERSON_1], mail [EMAIL_1] about card [CARD_1]");
        assert_eq!(draft.pii_counts["EMAIL"], 1);
        assert!(draft.status.is_none());
        let serialized = serde_json::to_string(&draft).unwrap();
        assert!(!serialized.contains("mary@example.com") && !serialized.contains("4111"));
        let restored = context
            .extension::<PiiScope>()
            .unwrap()
            .restore("Dear [PERSON_1], see [CARD_1].");
        assert_eq!(restored.text, "Dear Mary Johnson, see 4111 1111 1111 1111.");
    }

    #[tokio::test]
    async fn tenant_policies_block_and_allow() {
        let config = "actions: {card: block}\ntenants:\n  open:\n    actions: {email: allow}\n";
        let (draft, _) = run(config, "acme", "charge 4111 1111 1111 1111 please").await;
        assert_eq!(draft.status, Some(AnswerStatus::Blocked));
        assert!(draft.provenance.reason.as_deref().unwrap().ends_with("CARD"));
        let (draft, _) = run(config, "open", "mail mary@example.com, card 4111 1111 1111 1111").await;
        assert_eq!(draft.question, "mail mary@example.com, card [CARD_1]");
        assert_eq!(draft.status, None);
    }

    #[test]
    fn an_unknown_setting_is_refused_in_the_default_and_in_a_tenant_policy() {
        assert!(serde_yaml::from_str::<MaskPiiConfig>("phone_regio: US").is_err());
        assert!(serde_yaml::from_str::<MaskPiiConfig>("tenants: {acme: {action: {}}}").is_err());
        let config: MaskPiiConfig =
            serde_yaml::from_str("phone_region: US\ntenants: {acme: {entities: [email]}}").unwrap();
        assert_eq!(config.default_policy.phone_region.as_deref(), Some("US"));
        assert_eq!(config.tenants["acme"].policy.entities.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn an_unknown_region_is_reported() {
        let config: MaskPiiConfig = serde_yaml::from_str("phone_region: XX").unwrap();
        let mut errors = Vec::new();
        config.validate("pipelines[1].stages[1]", &mut errors);
        assert_eq!(errors.len(), 1);
    }
}
