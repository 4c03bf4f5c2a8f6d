//! The children a reconcile wants, in the order they are written, and the
//! checks before any write: the spec against the CRD's rules, and each
//! child's name against objects another owner controls. Pure.

use kube::ResourceExt;
use serde_json::{Value, json};

use super::plan::DesiredChild;
use crate::{
    admission::Admission,
    children::{Children, ROUTE_KIND},
    controller::Error,
    resource::{ADOPT_ANNOTATION, API_VERSION, KIND, VisitCounterApp},
};

/// The CRD's rules, for an object that was stored without them.
pub fn validate(app: &VisitCounterApp, admission: &Admission) -> Result<(), Error> {
    let object = json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": app.name_any()},
        "spec": app.spec,
    });
    admission.admit(&object).map(|_| ()).map_err(Error::InvalidSpec)
}

/// The children as they are applied, in **the write order**, which this
/// function alone sets: the user-facing Service, the Services per version
/// of a weighted route and the HTTPRoute (with `spec.traffic`), the
/// headless Service, the ServiceAccount (when the operator owns one), the
/// ConfigMap, a blue/green app's preview Service and StatefulSet (or a
/// shadow app's), and the serving StatefulSet last.
///
/// The order keeps a refused write harmless without a dry run of each: a
/// node port another Service holds (the refusal a valid spec meets) is
/// refused at the first write, before anything changed; the ConfigMap of a
/// new config is a new object no pod uses until the StatefulSet names it;
/// what the pods use exists before the StatefulSet that starts them; and
/// children this reconcile created are deleted again when a later write is
/// refused (`write::apply_changes`). What the order cannot cover, an
/// in-place update of a Service or ServiceAccount followed by one of the
/// StatefulSet, is tried as a dry run first (`plan::dry_runs`).
pub fn desired(children: Children) -> Result<Vec<DesiredChild>, Error> {
    fn child(kind: &'static str, object: impl serde::Serialize) -> Result<DesiredChild, Error> {
        let value = serde_json::to_value(object).map_err(|e| Error::Serialize(kind, e))?;
        Ok(DesiredChild::new(kind, value))
    }
    let mut desired = Vec::with_capacity(5);
    let (route, versions) = match children.traffic {
        Some(traffic) => (Some(DesiredChild::new(ROUTE_KIND, traffic.route)), traffic.versions),
        None => (None, None),
    };
    desired.push(child("Service", children.service)?);
    if let Some(versions) = versions {
        desired.push(child("Service", versions.stable)?);
        desired.push(child("Service", versions.canary)?);
    }
    // After the Services it sends requests to. A cluster without the
    // Gateway API is told before any write, by the route's read
    // (`adopt::look_past_the_caches`).
    desired.extend(route);
    desired.push(child("Service", children.headless_service)?);
    if let Some(account) = children.service_account {
        desired.push(child("ServiceAccount", account)?);
    }
    desired.push(child("ConfigMap", children.config_map)?);
    for second in [children.preview, children.shadow].into_iter().flatten() {
        desired.push(child("Service", second.service)?);
        if let Some(stateful_set) = second.stateful_set {
            desired.push(child("StatefulSet", stateful_set)?);
        }
    }
    // Last, the serving StatefulSet: the one the status reports.
    desired.push(child("StatefulSet", children.stateful_set)?);
    Ok(desired)
}

/// Refuses to touch a child whose name is taken by an object that another
/// owner controls.
pub fn check_owned(app: &VisitCounterApp, children: &[DesiredChild], live: &[Option<Value>]) -> Result<(), Error> {
    let mut unowned = Vec::new();
    for (child, live) in children.iter().zip(live) {
        let Some(live) = live else { continue };
        if let Some(owner) = foreign_controller(live, app) {
            return Err(Error::NotOwned {
                kind: child.kind,
                name: child.name.clone(),
                owner,
            });
        }
        // The children a chart of the same names would have made, and a
        // route someone wrote by hand; the others are named by a hash (the
        // ConfigMap) or shared by design (a ServiceAccount), and are taken
        // as they are.
        if matches!(child.kind, "StatefulSet" | "Service" | ROUTE_KIND) && uncontrolled(live) {
            unowned.push(described(child, live));
        }
    }
    if unowned.is_empty() || app.adopts() {
        return Ok(());
    }
    Err(Error::NotAdopted {
        objects: unowned.join(", "),
        annotation: ADOPT_ANNOTATION,
    })
}

/// The owner reference of `live` marked controller, if any.
fn controller_of(live: &Value) -> Option<&Value> {
    live["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["controller"] == true)
}

/// Whether nothing controls `live` (no owner reference marked controller).
pub fn uncontrolled(live: &Value) -> bool {
    controller_of(live).is_none()
}

/// Whether `app` controls `live`.
pub fn controlled_by(live: &Value, app: &VisitCounterApp) -> bool {
    controller_of(live).is_some_and(|o| o["uid"].as_str() == app.metadata.uid.as_deref())
}

/// "StatefulSet app-python (Helm release app-python)".
fn described(child: &DesiredChild, live: &Value) -> String {
    let release = live["metadata"]["annotations"]["meta.helm.sh/release-name"].as_str();
    match release {
        Some(release) => format!("{} {} (Helm release {release})", child.kind, child.name),
        None => format!("{} {}", child.kind, child.name),
    }
}

/// The controller of `live`, when it is not `app`.
fn foreign_controller(live: &Value, app: &VisitCounterApp) -> Option<String> {
    let owner = controller_of(live)?;
    (owner["uid"].as_str() != app.metadata.uid.as_deref()).then(|| {
        format!(
            "{} {}",
            owner["kind"].as_str().unwrap_or("?"),
            owner["name"].as_str().unwrap_or("?")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::{BuildSettings, desired_children, tests::app};

    fn web() -> VisitCounterApp {
        let mut app = app("web", json!({"replicas": 2}));
        app.metadata.uid = Some("uid-web".into());
        app
    }

    fn children_of(app: &VisitCounterApp) -> Vec<DesiredChild> {
        desired(desired_children(app, &BuildSettings::default()).unwrap()).unwrap()
    }

    #[test]
    fn the_statefulset_is_written_last_after_what_its_pods_use() {
        let order: Vec<(&str, String)> = children_of(&web()).into_iter().map(|c| (c.kind, c.name)).collect();
        let kinds: Vec<&str> = order.iter().map(|(kind, _)| *kind).collect();
        assert_eq!(kinds, ["Service", "Service", "ConfigMap", "StatefulSet"]);
        assert_eq!(
            order[0].1, "web",
            "the user-facing Service, whose node port can be refused, is first"
        );
        assert_eq!(order[1].1, "web-headless");
    }

    #[test]
    fn an_owned_service_account_comes_before_the_config_and_the_statefulset() {
        let app = app(
            "web",
            json!({"createServiceAccount": true, "serviceAccountName": "counter"}),
        );
        let kinds: Vec<&str> = children_of(&app).into_iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            ["Service", "Service", "ServiceAccount", "ConfigMap", "StatefulSet"]
        );
    }

    #[test]
    fn the_route_comes_after_the_services_it_sends_requests_to() {
        let app = app(
            "web",
            json!({"traffic": {"parentRef": {"name": "edge"}, "canaryWeight": 10}}),
        );
        let order: Vec<String> = children_of(&app)
            .into_iter()
            .map(|c| match c.kind {
                // Named by the hash of its content.
                "ConfigMap" => c.kind.to_owned(),
                kind => format!("{kind} {}", c.name),
            })
            .collect();
        assert_eq!(
            order,
            [
                "Service web",
                "Service web-stable",
                "Service web-canary",
                "HTTPRoute web",
                "Service web-headless",
                "ConfigMap",
                "StatefulSet web"
            ]
        );
    }

    #[test]
    fn a_route_nothing_controls_is_refused_unless_the_app_adopts() {
        let app = app("web", json!({"traffic": {"parentRef": {"name": "edge"}}}));
        let children = children_of(&app);
        let mut live = vec![None; children.len()];
        let route = children.iter().position(|c| c.kind == ROUTE_KIND).unwrap();
        live[route] = Some(json!({"metadata": {}}));
        let error = check_owned(&app, &children, &live).unwrap_err();
        assert_eq!(error.reason(), "ChildNotAdopted");
        assert!(error.to_string().starts_with("HTTPRoute web already exist"), "{error}");
    }

    #[test]
    fn a_child_another_owner_controls_is_refused_with_its_owner() {
        let app = web();
        let children = children_of(&app);
        let ours = json!({"metadata": {"ownerReferences": [{"controller": true, "uid": "uid-web", "kind": "VisitCounterApp", "name": "web"}]}});
        let theirs = json!({"metadata": {"ownerReferences": [{"controller": true, "uid": "other", "kind": "Deployment", "name": "shop"}]}});
        let unowned = json!({"metadata": {}});
        let mut live = vec![Some(ours), None, Some(unowned), None];
        assert!(check_owned(&app, &children, &live).is_ok());
        live[1] = Some(theirs);
        let error = check_owned(&app, &children, &live).unwrap_err().to_string();
        assert!(error.contains("web-headless"), "{error}");
        assert!(error.contains("Deployment shop"), "{error}");
    }

    #[test]
    fn a_statefulset_or_service_nothing_controls_is_refused_unless_the_app_adopts() {
        let mut app = web();
        let children = children_of(&app);
        let helm = json!({"metadata": {"annotations": {"meta.helm.sh/release-name": "web"}}});
        let live = vec![Some(helm.clone()), None, None, Some(helm)];
        let error = check_owned(&app, &children, &live).unwrap_err();
        assert_eq!(error.reason(), "ChildNotAdopted");
        let words = error.to_string();
        assert!(
            words.starts_with("Service web (Helm release web), StatefulSet web (Helm release web) already exist"),
            "{words}"
        );
        assert!(words.contains("visitcounter.dev/adopt=true"), "{words}");
        app.metadata.annotations = Some([(ADOPT_ANNOTATION.to_owned(), "true".to_owned())].into());
        assert!(check_owned(&app, &children, &live).is_ok());
    }

    #[test]
    fn a_spec_past_the_rules_is_invalid() {
        let mut app = web();
        app.spec.replicas = 1;
        app.spec.update_strategy.rolling_update = serde_json::from_value(json!({"partition": 5})).unwrap();
        let error = validate(&app, &Admission::new()).unwrap_err().to_string();
        assert!(error.contains("partition"), "{error}");
        assert!(validate(&web(), &Admission::new()).is_ok());
    }
}
