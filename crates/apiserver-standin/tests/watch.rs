//! The watch protocol through a real kube watcher.

use std::time::Duration;

use apiserver_standin::StandIn;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
    runtime::{WatchStreamExt, watcher},
};

fn config_map(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

#[tokio::test]
async fn a_compaction_makes_watchers_list_again_and_they_miss_nothing() {
    let standin = StandIn::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(standin.client(), "default");
    api.create(&PostParams::default(), &config_map("a")).await.unwrap();
    let mut events = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    // The initial list: Init, InitApply(a), InitDone.
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap();
    }
    api.create(&PostParams::default(), &config_map("b")).await.unwrap();
    let applied = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap();
    assert!(matches!(applied, Some(Ok(watcher::Event::Apply(cm))) if cm.metadata.name.as_deref() == Some("b")));
    let lists_before = standin
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && !r.query.contains("watch"))
        .count();
    standin.compact();
    api.create(&PostParams::default(), &config_map("c")).await.unwrap();
    let mut seen_c = false;
    while !seen_c {
        if let Some(Ok(watcher::Event::InitApply(cm) | watcher::Event::Apply(cm))) =
            tokio::time::timeout(Duration::from_secs(10), events.next())
                .await
                .unwrap()
        {
            seen_c = cm.metadata.name.as_deref() == Some("c");
        }
    }
    let lists_after = standin
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && !r.query.contains("watch"))
        .count();
    assert!(lists_after > lists_before, "the watcher listed again");
}

#[tokio::test]
async fn lists_come_in_pages_and_a_watcher_reads_them_all() {
    let standin = StandIn::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(standin.client(), "default");
    for i in 0..7 {
        api.create(&PostParams::default(), &config_map(&format!("cm-{i}")))
            .await
            .unwrap();
    }
    let first = api.list(&kube::api::ListParams::default().limit(3)).await.unwrap();
    assert_eq!(first.items.len(), 3);
    assert!(first.metadata.continue_.is_some());
    let mut events = watcher(api, watcher::Config::default().page_size(3)).boxed();
    let mut names = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap()
        {
            Some(Ok(watcher::Event::InitApply(cm))) => names.push(cm.metadata.name.unwrap()),
            Some(Ok(watcher::Event::InitDone)) => break,
            _ => {}
        }
    }
    assert_eq!(names.len(), 7, "{names:?}");
    let pages = standin
        .requests()
        .iter()
        .filter(|r| r.query.contains("limit=3"))
        .count();
    assert_eq!(pages, 1 + 3, "one page for the list call, three for the watcher");
}
