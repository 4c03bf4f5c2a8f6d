//! `spec.traffic`: requests reach the app through a Gateway API `HTTPRoute`
//! the operator keeps, attached to a Gateway someone else runs.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Routing through a Gateway (Gateway API). The operator keeps an
/// `HTTPRoute` named after the app, attached to `parentRef`, whose
/// backends are the app's Services. The cluster needs the Gateway API CRDs;
/// without them the app is `Degraded` (`GatewayAPIMissing`) and nothing is
/// written.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Traffic {
    /// The Gateway the route attaches to.
    pub parent_ref: ParentRef,

    /// Host names the route answers for (`shop.example.com`,
    /// `*.example.com`); every host the Gateway's listener takes when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(
            length(min = 1, max = 253),
            regex(pattern = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
        )
    )]
    pub hostnames: Vec<String>,

    /// The path prefix routed to the app.
    #[serde(default = "root")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/"))]
    pub path: String,

    /// The percentage of requests sent to the pods of the new template while
    /// a rolling update is under way (a canary held by `partition`,
    /// `canaryReplicas` or `steps`), or, under `BlueGreen`, to the preview
    /// before the switch (once its pods hold the serving pods' counts),
    /// whatever the number of pods on each side. Unset, requests spread over
    /// the ready pods of a rolling update, and go to the serving pods of a
    /// blue/green one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub canary_weight: Option<i32>,

    /// An A/B test: while a rolling update is held with pods of both
    /// templates (`rollingUpdate.partition` or `canaryReplicas`), requests
    /// that match go to the new template's pods (B) and all others to the
    /// current ones (A). Promoting the rollout ends the test with B.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ab_test: Option<AbTest>,
}

/// Which requests an A/B test sends to B.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AbTest {
    /// The requests B answers: those with this header, or this cookie.
    #[serde(rename = "match")]
    pub match_: AbMatch,
}

/// A header or a cookie a request must carry to reach B; exactly one.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("has(self.header) != has(self.cookie)")
        .message("traffic.abTest.match takes exactly one of header and cookie")
)]
#[serde(rename_all = "camelCase")]
pub struct AbMatch {
    /// A request header and its exact value (`X-Variant: b`); the name is
    /// matched whatever its case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderMatch>,
    /// A cookie and its exact value (`variant=b`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<CookieMatch>,
}

/// A header name and value, as Gateway API's `HTTPHeaderMatch` takes them.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatch {
    /// The header's name (`X-Variant`).
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$"))]
    pub name: String,
    /// The value that sends a request to B, compared exactly.
    #[schemars(length(min = 1, max = 4096))]
    pub value: String,
}

/// A cookie name and value: letters, digits, `.`, `_` and `-`, so the
/// route can match them inside the `Cookie` header.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CookieMatch {
    /// The cookie's name (`variant`).
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[A-Za-z0-9._-]+$"))]
    pub name: String,
    /// The value that sends a request to B, compared exactly.
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^[A-Za-z0-9._-]+$"))]
    pub value: String,
}

/// A Gateway (and optionally one of its listeners) that a route attaches to.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    /// The Gateway's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The Gateway's namespace; the app's when unset. The Gateway's
    /// listener must allow routes from the app's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// The listener of the Gateway to attach to; all of them when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub section_name: Option<String>,
}

fn root() -> String {
    "/".into()
}
