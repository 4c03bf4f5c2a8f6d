//! The watches of the apps and their children: each fills a cache and wakes
//! the app an object belongs to.

use futures::{FutureExt, StreamExt, TryStreamExt};
use kube::{
    Api, Client,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;

use super::{backoff::WatchBackoff, cache::strip_app, store::ChildStore};
use crate::{children::MANAGED_BY, resource::VisitCounterApp};

/// Objects per page of a watch's list. Smaller than client-go's 500: a page
/// is held in memory whole while it is decoded, and the peak stays.
const LIST_PAGE_SIZE: u32 = 100;

pub fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A watch of the operator's children of type `K`: the cache, holding
/// what `keep` makes of each, and the stream of touched objects that
/// triggers their owner's reconcile. Each object is `strip`ped first
/// (`cache::strip_child`).
pub fn child_watch<K, V>(
    client: &Client,
    namespace: Option<&str>,
    strip: impl FnMut(&mut K) + Send + 'static,
    keep: impl Fn(&K) -> V + Send + 'static,
) -> (
    ChildStore<V>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    V: Send + Sync + 'static,
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let store = ChildStore::default();
    let config = watcher::Config::default()
        .labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"))
        .page_size(LIST_PAGE_SIZE);
    let writer = store.clone();
    let stream = watcher(scoped::<K>(client, namespace), config)
        .modify(strip)
        .inspect_ok(move |event| writer.apply(event, &keep))
        .backoff(WatchBackoff::default())
        .touched_objects();
    (store, without_errors(stream))
}

/// Logs watch errors and keeps them from the controller. The watcher
/// already retries with its own backoff; an error reaching the controller
/// would also pause every trigger stream with the controller's backoff, so
/// one routine 410 Gone per watch (after an etcd compaction) would stall
/// all reconciles for seconds.
pub fn without_errors<K: Send + 'static>(
    stream: impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static {
    stream.filter_map(|event| {
        futures::future::ready(match event {
            Ok(object) => Some(Ok(object)),
            Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                tracing::debug!("a watch expired (410 Gone); listing again");
                None
            }
            Err(error) => {
                tracing::warn!(%error, "watch failed; retrying with backoff");
                None
            }
        })
    })
}

/// Whether the store holds its first full list. Polled rather than awaited:
/// a store's readiness wakes only one of several waiters.
pub fn store_ready<K>(store: &Store<K>) -> bool
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

/// The reflector over the apps: their cache and the stream of apps that
/// changed.
pub fn app_watch(
    client: &Client,
    namespace: Option<&str>,
) -> (
    Store<VisitCounterApp>,
    impl futures::Stream<Item = Result<VisitCounterApp, watcher::Error>> + Send + 'static,
) {
    let (apps, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(
            scoped::<VisitCounterApp>(client, namespace),
            watcher::Config::default().page_size(LIST_PAGE_SIZE),
        )
        .modify(strip_app),
    )
    .backoff(WatchBackoff::default())
    .applied_objects();
    (apps, without_errors(stream))
}
