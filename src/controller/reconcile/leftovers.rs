//! Children the spec no longer asks for: blue/green's preview Service once
//! the app left blue/green, the Services per version once the route has no
//! canary weight, and the route once `spec.traffic` is unset. Each goes by
//! its uid, only when the app controls it, with an Event that says why.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::ResourceExt;
use serde_json::Value;

use super::{Context, apply::delete_child, desired::controlled_by};
use crate::{
    children::{
        ROUTE_API_VERSION, ROUTE_KIND, canary_service_name, preview_service_name, shadow_name, stable_service_name,
    },
    controller::Error,
    resource::{UpdateStrategyType, VisitCounterApp},
};

/// A child to delete, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leftover {
    pub kind: &'static str,
    pub name: String,
    pub uid: String,
    pub why: &'static str,
}

/// The app's own children of the names that may be left over, as live.
#[derive(Debug, Default)]
pub struct Found {
    pub preview: Option<Value>,
    pub stable: Option<Value>,
    pub canary: Option<Value>,
    pub shadow: Option<Value>,
    pub route: Option<Value>,
}

/// Which of `found` the spec no longer asks for. Pure.
pub fn unwanted(app: &VisitCounterApp, found: &Found) -> Vec<Leftover> {
    let traffic = app.spec.traffic.as_ref();
    let versions = traffic.is_some_and(|t| t.canary_weight.is_some() || t.ab_test.is_some())
        && app.spec.update_strategy.type_ != UpdateStrategyType::BlueGreen;
    // The route first: it may still send requests to the Services.
    let candidates = [
        (ROUTE_KIND, &found.route, traffic.is_none(), "spec.traffic is not set"),
        (
            "Service",
            &found.preview,
            app.spec.update_strategy.type_ != UpdateStrategyType::BlueGreen,
            "updateStrategy.type is no longer BlueGreen",
        ),
        (
            "Service",
            &found.shadow,
            app.spec.update_strategy.type_ != UpdateStrategyType::Shadow,
            "updateStrategy.type is no longer Shadow",
        ),
        (
            "Service",
            &found.stable,
            !versions,
            "neither spec.traffic.canaryWeight nor spec.traffic.abTest is set, or the app is under BlueGreen",
        ),
        (
            "Service",
            &found.canary,
            !versions,
            "neither spec.traffic.canaryWeight nor spec.traffic.abTest is set, or the app is under BlueGreen",
        ),
    ];
    candidates
        .into_iter()
        .filter_map(|(kind, live, gone, why)| {
            let live = live.as_ref().filter(|_| gone)?;
            Some(Leftover {
                kind,
                name: live["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
                uid: live["metadata"]["uid"].as_str().unwrap_or_default().to_owned(),
                why,
            })
        })
        .collect()
}

/// Finds the app's leftovers (Services from the cache; the route, which is
/// not watched, read only when the last status named one) and deletes
/// them.
pub async fn remove(app: &VisitCounterApp, ctx: &Context, namespace: &str) -> Result<(), Error> {
    let name = app.name_any();
    let own = |live: Option<Value>| live.filter(|l| controlled_by(l, app));
    let service = |child: String| own(ctx.caches.get("Service", namespace, &child));
    let had_route = app.status.as_ref().is_some_and(|s| s.traffic.is_some());
    let route = match had_route && app.spec.traffic.is_none() {
        // Without the Gateway API there is no route left to delete.
        true => match super::adopt::get_route(ctx, namespace, &name).await {
            Ok(read) => own(read),
            Err(Error::GatewayApiMissing) => None,
            Err(error) => return Err(error),
        },
        false => None,
    };
    let found = Found {
        preview: service(preview_service_name(&name)),
        stable: service(stable_service_name(&name)),
        canary: service(canary_service_name(&name)),
        shadow: service(shadow_name(&name)),
        route,
    };
    for leftover in unwanted(app, &found) {
        delete_child(
            &ctx.client,
            namespace,
            leftover.kind,
            &leftover.name,
            &leftover.uid,
            &ctx.metrics,
        )
        .await
        .map_err(|source| Error::DeleteLeftover {
            kind: leftover.kind,
            name: leftover.name.clone(),
            source: Box::new(source),
        })?;
        let message = format!("deleted {} {}: {}", leftover.kind, leftover.name, leftover.why);
        let deleted = ObjectReference {
            api_version: Some(
                if leftover.kind == ROUTE_KIND {
                    ROUTE_API_VERSION
                } else {
                    "v1"
                }
                .into(),
            ),
            kind: Some(leftover.kind.into()),
            name: Some(leftover.name.clone()),
            namespace: Some(namespace.into()),
            uid: Some(leftover.uid.clone()),
            ..ObjectReference::default()
        };
        ctx.event_about(app, "LeftoverDeleted", message, deleted).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::children::tests::app;

    fn live(name: &str) -> Option<Value> {
        Some(json!({"metadata": {"name": name, "uid": format!("uid-{name}")}}))
    }

    fn all() -> Found {
        Found {
            preview: live("web-preview"),
            stable: live("web-stable"),
            canary: live("web-canary"),
            shadow: live("web-shadow"),
            route: live("web"),
        }
    }

    fn names(leftovers: &[Leftover]) -> Vec<String> {
        leftovers.iter().map(|l| format!("{} {}", l.kind, l.name)).collect()
    }

    #[test]
    fn what_the_spec_still_asks_for_stays() {
        let web = app(
            "web",
            json!({"updateStrategy": {"type": "BlueGreen"}, "traffic": {"parentRef": {"name": "edge"}}}),
        );
        assert_eq!(
            names(&unwanted(&web, &all())),
            ["Service web-shadow", "Service web-stable", "Service web-canary"]
        );
        let weighted = app(
            "web",
            json!({"traffic": {"parentRef": {"name": "edge"}, "canaryWeight": 5}}),
        );
        assert_eq!(
            names(&unwanted(&weighted, &all())),
            ["Service web-preview", "Service web-shadow"]
        );
        let shadow = app(
            "web",
            json!({"updateStrategy": {"type": "Shadow"}, "traffic": {"parentRef": {"name": "edge"}}}),
        );
        assert_eq!(
            names(&unwanted(&shadow, &all())),
            ["Service web-preview", "Service web-stable", "Service web-canary"]
        );
    }

    #[test]
    fn without_traffic_the_route_and_the_version_services_go_with_their_uids() {
        let leftovers = unwanted(&app("web", json!({})), &all());
        assert_eq!(
            names(&leftovers),
            [
                "HTTPRoute web",
                "Service web-preview",
                "Service web-shadow",
                "Service web-stable",
                "Service web-canary"
            ]
        );
        assert_eq!(leftovers[0].uid, "uid-web");
        assert_eq!(leftovers[0].why, "spec.traffic is not set");
    }

    #[test]
    fn nothing_found_nothing_deleted() {
        assert!(unwanted(&app("web", json!({})), &Found::default()).is_empty());
    }
}
