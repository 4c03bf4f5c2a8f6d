//! The rolling update (the report's strategy 1) and the canary held by a
//! partition (strategy 6): the StatefulSet controller replaces the pods,
//! highest ordinal first, down to the partition the operator sets.

/// What an update of the StatefulSet from `before` to `after` (as the API
/// server returned it) promoted: the partition went down, so the pods at
/// the ordinals in between are no longer held (they move to the update
/// revision, or, when the template was reverted, stay where they are).
pub fn promotion(name: &str, before: &serde_json::Value, after: &serde_json::Value) -> Option<String> {
    let partition = |sts: &serde_json::Value| {
        sts.pointer("/spec/updateStrategy/rollingUpdate/partition")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0)
    };
    let (from, to) = (partition(before), partition(after));
    let replicas = after
        .pointer("/spec/replicas")
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(1);
    let (first, last) = (to, from.min(replicas) - 1);
    (first <= last).then(|| {
        let pods = if first == last {
            format!("{name}-{first} is")
        } else {
            format!("{name}-{first} to {name}-{last} are")
        };
        format!("promoted: the partition went from {from} to {to}, so {pods} no longer held at the old revision")
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::promotion;

    fn sts(partition: Option<i64>, replicas: i64) -> serde_json::Value {
        let mut sts = json!({"spec": {"replicas": replicas, "updateStrategy": {"type": "RollingUpdate"}}});
        if let Some(p) = partition {
            sts["spec"]["updateStrategy"]["rollingUpdate"] = json!({"partition": p});
        }
        sts
    }

    #[test]
    fn a_lower_partition_promotes_the_pods_in_between() {
        assert_eq!(
            promotion("web", &sts(Some(2), 3), &sts(None, 3)).as_deref(),
            Some("promoted: the partition went from 2 to 0, so web-0 to web-1 are no longer held at the old revision")
        );
        assert_eq!(
            promotion("web", &sts(Some(2), 3), &sts(Some(1), 3)).as_deref(),
            Some("promoted: the partition went from 2 to 1, so web-1 is no longer held at the old revision")
        );
    }

    #[test]
    fn no_promotion_without_a_lower_partition_or_beyond_the_replicas() {
        assert_eq!(promotion("web", &sts(None, 3), &sts(None, 3)), None);
        assert_eq!(promotion("web", &sts(Some(1), 3), &sts(Some(2), 3)), None);
        // A partition at or above the replicas held nobody.
        assert_eq!(promotion("web", &sts(Some(5), 3), &sts(Some(3), 3)), None);
    }
}
