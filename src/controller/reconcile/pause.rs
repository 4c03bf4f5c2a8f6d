//! The pause annotation: a paused app's children are left as they are, and
//! its status says so.

use kube::runtime::events::EventType;

use super::{
    Context,
    report::{status_from_caches, update_status},
};
use crate::{
    controller::{Error, status::PAUSED},
    resource::{PAUSED_ANNOTATION, VisitCounterApp},
};

/// Where the app stands with its pause annotation.
#[derive(Debug, PartialEq, Eq)]
pub enum Pause {
    /// Not paused, and not just resumed.
    Running,
    /// The annotation was removed since the status said paused.
    Resumed,
    /// Paused; `newly` when the status does not say so yet.
    Paused { newly: bool },
}

impl Pause {
    pub fn of(app: &VisitCounterApp) -> Self {
        let was_paused = app
            .status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == PAUSED && c.status == "True"));
        match (app.is_paused(), was_paused) {
            (true, was) => Pause::Paused { newly: !was },
            (false, true) => Pause::Resumed,
            (false, false) => Pause::Running,
        }
    }
}

/// Says a change of pause in an Event and, while paused, in the status.
/// Returns whether the app is paused.
pub async fn handle(app: &VisitCounterApp, ctx: &Context) -> Result<bool, Error> {
    let pause = Pause::of(app);
    let event = match pause {
        Pause::Paused { newly: true } => Some((
            "Paused",
            format!("{PAUSED_ANNOTATION} is \"true\": the operator changes nothing until it is removed"),
        )),
        Pause::Resumed => Some(("Resumed", format!("{PAUSED_ANNOTATION} was removed: reconciling again"))),
        _ => None,
    };
    if let Some((reason, message)) = event {
        ctx.event(app, EventType::Normal, reason, message).await;
    }
    if let Pause::Paused { .. } = pause {
        update_status(app, status_from_caches(app, ctx, None, true), ctx).await?;
        return Ok(true);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use serde_json::json;

    use super::*;
    use crate::{children::tests::app, resource::VisitCounterAppStatus};

    fn with(annotated: bool, status_paused: bool) -> VisitCounterApp {
        let mut app = app("web", json!({}));
        if annotated {
            app.metadata.annotations = Some(BTreeMap::from([(PAUSED_ANNOTATION.to_owned(), "true".to_owned())]));
        }
        if status_paused {
            app.status = Some(VisitCounterAppStatus {
                conditions: vec![Condition {
                    type_: PAUSED.into(),
                    status: "True".into(),
                    reason: "PausedByAnnotation".into(),
                    message: String::new(),
                    last_transition_time: Time(Default::default()),
                    observed_generation: None,
                }],
                ..Default::default()
            });
        }
        app
    }

    #[test]
    fn a_pause_is_news_once_and_a_resume_once() {
        assert_eq!(Pause::of(&with(true, false)), Pause::Paused { newly: true });
        assert_eq!(Pause::of(&with(true, true)), Pause::Paused { newly: false });
        assert_eq!(Pause::of(&with(false, true)), Pause::Resumed);
        assert_eq!(Pause::of(&with(false, false)), Pause::Running);
    }
}
