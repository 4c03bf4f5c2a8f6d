//! `spec.traffic`'s children: the app's `HTTPRoute` (Gateway API), and,
//! with a canary weight, a Service for each version it splits requests
//! over during a rolling update: `<app>-stable` for the pods of the current
//! revision and `<app>-canary` for those of the new one
//! (`rollout::traffic` pins both and sets the weights).

use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use serde_json::{Value, json};

use super::{BuildError, app_name, child_meta, selector_labels, service::http_port};
use crate::resource::{AbMatch, UpdateStrategyType, VisitCounterApp};

/// The Gateway API version of the routes the operator writes.
pub const ROUTE_API_VERSION: &str = "gateway.networking.k8s.io/v1";
/// The kind of the route, as the write order and the errors name it.
pub const ROUTE_KIND: &str = "HTTPRoute";

/// The children of `spec.traffic`.
#[derive(Clone, Debug, PartialEq)]
pub struct Traffic {
    /// The `HTTPRoute`, with the app's Service as its one backend until the
    /// rollout decides the weights.
    pub route: Value,
    /// With a canary weight, the stable and the canary Service.
    pub versions: Option<Versions>,
}

/// The Services of the two versions a weighted route splits requests over.
#[derive(Clone, Debug, PartialEq)]
pub struct Versions {
    pub stable: Service,
    pub canary: Service,
}

/// One backend of the route: a Service of the app, on the app's port, and
/// its share of the requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub service: String,
    pub port: i32,
    pub weight: i32,
}

/// The children of `spec.traffic`, when set.
pub fn desired_traffic(app: &VisitCounterApp) -> Result<Option<Traffic>, BuildError> {
    let Some(traffic) = &app.spec.traffic else {
        return Ok(None);
    };
    let name = app_name(app)?;
    // Under BlueGreen the app's Service and the preview's are the two sides.
    let blue_green = app.spec.update_strategy.type_ == UpdateStrategyType::BlueGreen;
    let versions = match (traffic.canary_weight.is_some() || traffic.ab_test.is_some()) && !blue_green {
        true => Some(Versions {
            stable: version_service(app, stable_service_name(name))?,
            canary: version_service(app, canary_service_name(name))?,
        }),
        false => None,
    };
    // Until the rollout splits it (`rollout::traffic`): the app's Service.
    let backend = Backend {
        service: name.to_owned(),
        port: app.spec.service.port.unwrap_or(app.spec.port),
        weight: 100,
    };
    // ObjectMeta always serializes.
    let metadata = serde_json::to_value(child_meta(app, name.to_owned())?).unwrap_or_default();
    let mut route = json!({"apiVersion": ROUTE_API_VERSION, "kind": ROUTE_KIND, "metadata": metadata});
    let parent = &traffic.parent_ref;
    let mut parent_ref = json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": parent.name});
    if let Some(namespace) = &parent.namespace {
        parent_ref["namespace"] = json!(namespace);
    }
    if let Some(section) = &parent.section_name {
        parent_ref["sectionName"] = json!(section);
    }
    route["spec"] = json!({
        "parentRefs": [parent_ref],
        "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": traffic.path}}],
            "backendRefs": [],
        }],
    });
    if !traffic.hostnames.is_empty() {
        route["spec"]["hostnames"] = json!(traffic.hostnames);
    }
    set_backends(&mut route, &[backend]);
    Ok(Some(Traffic { route, versions }))
}

/// Sets the route's backends (its one rule's).
pub fn set_backends(route: &mut Value, backends: &[Backend]) {
    route["spec"]["rules"][0]["backendRefs"] = backend_refs(backends);
}

/// Splits the route's one rule in two for an A/B test: requests that carry
/// `header` (a Gateway API `HTTPHeaderMatch`) go to `b`, all others to `a`.
/// Gateway API prefers the rule with more header matches, whatever the
/// order; B's comes first to read.
pub fn set_ab_rules(route: &mut Value, header: Value, a: Backend, b: Backend) {
    let rule = route["spec"]["rules"][0].clone();
    let mut matched = rule.clone();
    matched["matches"][0]["headers"] = json!([header]);
    matched["backendRefs"] = backend_refs(&[b]);
    let mut others = rule;
    others["backendRefs"] = backend_refs(&[a]);
    route["spec"]["rules"] = json!([matched, others]);
}

/// The `HTTPHeaderMatch` of an A/B test's B: the header's exact value, or
/// the cookie found in the `Cookie` header by a regular expression that
/// spans the whole header, so it means the same to a gateway that searches
/// (Traefik) and to one that matches whole values (Envoy's).
pub fn ab_header_match(ab: &AbMatch) -> Value {
    match (&ab.header, &ab.cookie) {
        (Some(header), _) => json!({"type": "Exact", "name": header.name, "value": header.value}),
        (None, Some(cookie)) => json!({
            "type": "RegularExpression",
            "name": "Cookie",
            "value": format!(r"^(.*;\s*)?{}={}(\s*;.*)?$", regex_literal(&cookie.name), regex_literal(&cookie.value)),
        }),
        // The schema asks for one of them.
        (None, None) => json!({"type": "Exact", "name": "X-Visitcounter-Variant", "value": "b"}),
    }
}

/// A cookie name or value (letters, digits, `.`, `_`, `-`) as a regular
/// expression that matches it and nothing else.
fn regex_literal(text: &str) -> String {
    text.replace('.', r"\.")
}

fn backend_refs(backends: &[Backend]) -> Value {
    backends
        .iter()
        .map(|b| json!({"group": "", "kind": "Service", "name": b.service, "port": b.port, "weight": b.weight}))
        .collect()
}

/// A ClusterIP Service on the app's port, for one version; the rollout
/// pins its selector to that version's revision.
fn version_service(app: &VisitCounterApp, name: String) -> Result<Service, BuildError> {
    let app_name = app_name(app)?;
    Ok(Service {
        metadata: child_meta(app, name)?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(app_name)),
            ports: Some(vec![http_port(app.spec.port, None)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// The Service of the current revision's pods.
pub fn stable_service_name(app: &str) -> String {
    format!("{app}-stable")
}

/// The Service of the new revision's pods.
pub fn canary_service_name(app: &str) -> String {
    format!("{app}-canary")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::tests::app;

    fn backends(route: &Value) -> Vec<(String, i64)> {
        route["spec"]["rules"][0]["backendRefs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| (b["name"].as_str().unwrap().to_owned(), b["weight"].as_i64().unwrap()))
            .collect()
    }

    #[test]
    fn no_traffic_no_route() {
        assert_eq!(desired_traffic(&app("web", json!({}))).unwrap(), None);
    }

    #[test]
    fn the_route_attaches_to_the_gateway_and_sends_the_path_to_the_apps_service() {
        let web = app(
            "web",
            json!({"service": {"port": 80}, "traffic": {"parentRef": {"name": "edge", "namespace": "gateways", "sectionName": "web"},
                   "hostnames": ["shop.example.com"], "path": "/shop"}}),
        );
        let traffic = desired_traffic(&web).unwrap().unwrap();
        let route = &traffic.route;
        assert_eq!(route["apiVersion"], ROUTE_API_VERSION);
        assert_eq!(route["kind"], "HTTPRoute");
        assert_eq!(route["metadata"]["name"], "web");
        assert_eq!(route["metadata"]["ownerReferences"][0]["kind"], "VisitCounterApp");
        assert_eq!(
            route["spec"]["parentRefs"],
            json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge", "namespace": "gateways", "sectionName": "web"}])
        );
        assert_eq!(route["spec"]["hostnames"], json!(["shop.example.com"]));
        assert_eq!(
            route["spec"]["rules"][0]["matches"],
            json!([{"path": {"type": "PathPrefix", "value": "/shop"}}])
        );
        assert_eq!(backends(route), [("web".to_owned(), 100)]);
        assert_eq!(route["spec"]["rules"][0]["backendRefs"][0]["port"], 80);
        assert_eq!(traffic.versions, None);
    }

    #[test]
    fn an_ab_test_splits_the_rule_by_the_header() {
        let mut route = json!({"spec": {"rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}]}});
        let side = |service: &str| Backend {
            service: service.into(),
            port: 80,
            weight: 100,
        };
        let header = json!({"type": "Exact", "name": "X-Variant", "value": "b"});
        set_ab_rules(&mut route, header.clone(), side("web-stable"), side("web-canary"));
        let rules = route["spec"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0]["matches"][0]["headers"], json!([header]));
        assert_eq!(rules[0]["matches"][0]["path"]["value"], "/");
        assert_eq!(rules[0]["backendRefs"][0]["name"], "web-canary");
        assert_eq!(rules[1]["matches"][0].get("headers"), None);
        assert_eq!(rules[1]["backendRefs"][0]["name"], "web-stable");
    }

    #[test]
    fn a_cookie_is_matched_inside_the_cookie_header_and_nothing_else() {
        let ab: AbMatch = serde_json::from_value(json!({"cookie": {"name": "variant", "value": "b.2"}})).unwrap();
        let header = ab_header_match(&ab);
        assert_eq!(header["name"], "Cookie");
        assert_eq!(header["type"], "RegularExpression");
        let value = header["value"].as_str().unwrap();
        let searched = regex::Regex::new(value).unwrap();
        // Matched whole, as Envoy does.
        let whole = regex::Regex::new(&format!("^(?:{value})$")).unwrap();
        for yes in [
            "variant=b.2",
            "a=1; variant=b.2",
            "variant=b.2; a=1",
            "a=1;variant=b.2",
            "a=1; variant=b.2; c=3",
        ] {
            assert!(searched.is_match(yes) && whole.is_match(yes), "{yes}");
        }
        for no in [
            "variant=bx2",
            "myvariant=b.2",
            "variant=b.23",
            "a=variant=b.2",
            "a=1; variant=b",
        ] {
            assert!(!searched.is_match(no) && !whole.is_match(no), "{no}");
        }
        let ab: AbMatch = serde_json::from_value(json!({"header": {"name": "X-Variant", "value": "b"}})).unwrap();
        assert_eq!(
            ab_header_match(&ab),
            json!({"type": "Exact", "name": "X-Variant", "value": "b"})
        );
    }

    #[test]
    fn a_canary_weight_brings_a_service_per_version() {
        let web = app(
            "web",
            json!({"port": 8080, "traffic": {"parentRef": {"name": "edge"}, "canaryWeight": 10}}),
        );
        let traffic = desired_traffic(&web).unwrap().unwrap();
        assert_eq!(traffic.route["spec"].get("hostnames"), None);
        assert_eq!(backends(&traffic.route), [("web".to_owned(), 100)]);
        let versions = traffic.versions.unwrap();
        assert_eq!(versions.stable.metadata.name.as_deref(), Some("web-stable"));
        assert_eq!(versions.canary.metadata.name.as_deref(), Some("web-canary"));
        let spec = versions.canary.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(spec.ports.unwrap()[0].port, 8080);
    }
}
