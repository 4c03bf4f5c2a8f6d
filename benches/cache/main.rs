//! Memory of the operator's watch caches: how many bytes each cached object
//! keeps, counted by a global allocator while a cache is filled with copies
//! of real objects (`objects/`, read from a v1.36 API server
//! where the operator ran one app on kwok's nodes; see `objects/README.md`).
//! Each object is decoded, stripped and kept as the operator's watches do
//! it: the apps in kube's reflector store, the children in the operator's
//! own (`controller::runtime::store`).
//!
//! It prints, per kind, the bytes and allocations each cached object keeps,
//! beside the same object kept typed and whole (what a watch keeps when it
//! strips nothing), and what one app of 2 replicas costs in all.
//!
//! Run: `cargo bench --bench cache`.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicIsize, Ordering::Relaxed},
};

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Pod, Service},
};
use kube::runtime::{
    reflector::{self, Lookup},
    watcher,
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use visitcounter::{
    controller::runtime::{
        cache::{strip_app, strip_child},
        compact::Compact,
        slim_pod::SlimPod,
        store::ChildStore,
    },
    resource::VisitCounterApp,
};

/// Bytes the program holds now, and how many allocations.
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_ALLOCATIONS: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: every call goes to the system allocator unchanged; only counts
// are kept beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Relaxed);
            LIVE_ALLOCATIONS.fetch_add(1, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(p, layout) };
        LIVE_BYTES.fetch_sub(layout.size() as isize, Relaxed);
        LIVE_ALLOCATIONS.fetch_sub(1, Relaxed);
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let q = unsafe { System.realloc(p, layout, new_size) };
        if !q.is_null() {
            LIVE_BYTES.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Copies of each object in a store: enough that the store's own table is
/// counted at its usual fill.
const COPIES: usize = 10_000;
/// glibc's malloc keeps 8 bytes of header per chunk and rounds each chunk
/// up to 16: what an allocation costs beyond what it asked for, on average.
const MALLOC_OVERHEAD: f64 = 16.0;

/// What each cached object keeps.
#[derive(Clone, Copy)]
struct Kept {
    bytes: f64,
    allocations: f64,
}

impl Kept {
    /// Bytes with glibc's overhead per allocation.
    fn resident(self) -> f64 {
        self.bytes + self.allocations * MALLOC_OVERHEAD
    }
}

/// The object of `objects/<file>`.
fn object(file: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/cache/objects")
        .join(file);
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// The bytes each of `COPIES` copies of `json` keeps once `hold` took it,
/// decoded as `K` from the text a watch receives and then `strip`ped;
/// `held` counts what is held after.
fn kept<K: DeserializeOwned>(
    json: &Value,
    strip: impl Fn(&mut K),
    mut hold: impl FnMut(watcher::Event<K>),
    held: impl Fn() -> usize,
) -> Kept {
    let texts: Vec<String> = (0..COPIES).map(|i| sibling(json, i).to_string()).collect();
    let (bytes, allocations) = (LIVE_BYTES.load(Relaxed), LIVE_ALLOCATIONS.load(Relaxed));
    for text in &texts {
        let mut object: K = serde_json::from_str(text).unwrap();
        strip(&mut object);
        hold(watcher::Event::Apply(object));
    }
    let kept = Kept {
        bytes: (LIVE_BYTES.load(Relaxed) - bytes) as f64 / COPIES as f64,
        allocations: (LIVE_ALLOCATIONS.load(Relaxed) - allocations) as f64 / COPIES as f64,
    };
    assert_eq!(held(), COPIES, "every copy is held");
    kept
}

/// `kept` in kube's reflector store, as the apps' watch keeps them.
fn reflected<K>(json: &Value, strip: impl Fn(&mut K)) -> Kept
where
    K: Lookup + Clone + DeserializeOwned + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, mut writer) = reflector::store::<K>();
    kept(
        json,
        strip,
        |event| writer.apply_watcher_event(&event),
        || store.state().len(),
    )
}

/// `kept` in the operator's own store, as the children's watches keep
/// `keep` of them.
fn cached<K: kube::Resource + DeserializeOwned, V>(json: &Value, keep: impl Fn(&K) -> V) -> Kept {
    let store = ChildStore::default();
    kept(
        json,
        strip_child,
        |event| store.apply(&event, &keep),
        || store.state().len(),
    )
}

/// The app the objects were read from.
const APP: &str = "web";

/// The `i`th copy of `object`, as another app's would be: its app's name,
/// every uid and its resourceVersion are its own. (The cached children are
/// packed against the first of their kind the process saw; copies alike
/// but for a counter would flatter that.)
fn sibling(object: &Value, i: usize) -> Value {
    let app = format!("shop{i:05}");
    let mut copy = rename(object, &app, i);
    copy["metadata"]["resourceVersion"] = Value::String((1_000_000 + 37 * i).to_string());
    copy
}

/// `value` with `APP` written `app` in every string and every uid its
/// own for copy `i`.
fn rename(value: &Value, app: &str, i: usize) -> Value {
    match value {
        Value::String(s) if is_uid(s) => Value::String(other_uid(s, i)),
        Value::String(s) => Value::String(s.replace(APP, app)),
        Value::Array(items) => Value::Array(items.iter().map(|v| rename(v, app, i)).collect()),
        Value::Object(fields) => Value::Object(fields.iter().map(|(k, v)| (k.clone(), rename(v, app, i))).collect()),
        other => other.clone(),
    }
}

/// Whether `s` is shaped as a uid: 8-4-4-4-12 hexadecimal digits.
fn is_uid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12]) && parts.iter().all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A uid for copy `i` of the uid `uid`, as random-looking as a real one.
fn other_uid(uid: &str, i: usize) -> String {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let hash = |salt: u8| BuildHasherDefault::<DefaultHasher>::default().hash_one((uid, i, salt));
    let hex = format!("{:016x}{:016x}", hash(0), hash(1));
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The object typed and whole, in a reflector store.
fn whole<K>(json: &Value) -> Kept
where
    K: Lookup + Clone + DeserializeOwned + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    reflected::<K>(json, |_| {})
}

fn main() {
    let pod = object("pod.json");
    let app = object("visitcounterapp.json");
    let stateful_set = object("statefulset.json");
    let service = object("service.json");
    let headless = object("service-headless.json");
    let config_map = object("configmap.json");
    let rows: Vec<(&str, Kept, Kept, f64)> = vec![
        (
            "Pod",
            cached::<SlimPod, _>(&pod, SlimPod::clone),
            whole::<Pod>(&pod),
            2.0,
        ),
        (
            "VisitCounterApp",
            reflected::<VisitCounterApp>(&app, strip_app),
            whole::<VisitCounterApp>(&app),
            1.0,
        ),
        (
            "StatefulSet",
            cached::<Compact<StatefulSet>, _>(&stateful_set, Compact::kept),
            whole::<StatefulSet>(&stateful_set),
            1.0,
        ),
        (
            "Service",
            cached::<Compact<Service>, _>(&service, Compact::kept),
            whole::<Service>(&service),
            1.0,
        ),
        (
            "Service (headless)",
            cached::<Compact<Service>, _>(&headless, Compact::kept),
            whole::<Service>(&headless),
            1.0,
        ),
        (
            "ConfigMap",
            cached::<Compact<ConfigMap>, _>(&config_map, Compact::kept),
            whole::<ConfigMap>(&config_map),
            1.0,
        ),
    ];
    println!(
        "bytes each cached object keeps in its watch's cache ({COPIES} copies, allocator-counted; \
         resident adds {MALLOC_OVERHEAD} bytes of malloc overhead per allocation)"
    );
    println!(
        "| object | cached: bytes (allocations), resident | typed whole: bytes (allocations), resident | per app of 2 replicas |"
    );
    println!("| --- | --- | --- | --- |");
    let mut per_app = (0.0, 0.0);
    for (kind, cached, typed, each) in &rows {
        println!(
            "| {kind} | {:.0} ({:.1}), {:.0} | {:.0} ({:.1}), {:.0} | {each} |",
            cached.bytes,
            cached.allocations,
            cached.resident(),
            typed.bytes,
            typed.allocations,
            typed.resident()
        );
        per_app.0 += cached.resident() * each;
        per_app.1 += typed.resident() * each;
    }
    println!("| one app in all (resident) | {:.0} | {:.0} | |", per_app.0, per_app.1);
}
