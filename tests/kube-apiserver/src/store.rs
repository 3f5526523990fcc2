// SPDX-License-Identifier: Apache-2.0
//! In-memory object store: one global, monotonic resourceVersion and, per kind,
//! the current objects plus a bounded history of watch events.

use std::collections::{BTreeMap, VecDeque};

use serde_json::Value;

use crate::{objects::now_rfc3339, Error};

/// The resource kinds the test API server stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `v1` Pods, under `/api/v1/pods`.
    Pod,
    /// `discovery.k8s.io/v1` EndpointSlices, under `/apis/discovery.k8s.io/v1/endpointslices`.
    EndpointSlice,
}

impl Kind {
    /// Every stored kind.
    pub const ALL: [Kind; 2] = [Kind::Pod, Kind::EndpointSlice];

    /// The object's `apiVersion`.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Pod => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
        }
    }

    /// The object's `kind`.
    pub fn kind(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::EndpointSlice => "EndpointSlice",
        }
    }

    /// The `kind` of a list of these objects.
    pub fn list_kind(self) -> &'static str {
        match self {
            Kind::Pod => "PodList",
            Kind::EndpointSlice => "EndpointSliceList",
        }
    }

    /// The plural resource name used in URL paths.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::EndpointSlice => "endpointslices",
        }
    }

    fn index(self) -> usize {
        match self {
            Kind::Pod => 0,
            Kind::EndpointSlice => 1,
        }
    }

    fn of_object(obj: &Value) -> Result<Kind, Error> {
        let (api_version, kind) = (obj["apiVersion"].as_str(), obj["kind"].as_str());
        Kind::ALL
            .into_iter()
            .find(|k| Some(k.kind()) == kind && Some(k.api_version()) == api_version)
            .ok_or_else(|| Error::UnsupportedKind(format!("{api_version:?}/{kind:?}")))
    }
}

/// A stored watch event.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    /// The resourceVersion the mutation produced.
    pub rv: u64,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub event_type: &'static str,
    /// The object after the mutation (before it, for `DELETED`, with the new rv).
    pub object: Value,
}

/// What a watch at some resourceVersion gets next.
#[derive(Debug)]
pub(crate) enum Since {
    /// The events after the requested version, and the store's current version.
    Events(Vec<Event>, u64),
    /// The requested version is older than the retained history (HTTP 410 Gone).
    Expired {
        /// The oldest version a watch could still start from.
        oldest: u64,
    },
}

#[derive(Debug, Default)]
struct KindState {
    objects: BTreeMap<(String, String), Value>,
    history: VecDeque<Event>,
    /// All events with rv > history_start are in `history`.
    history_start: u64,
}

/// The object store; callers wrap it in a mutex.
#[derive(Debug)]
pub(crate) struct Store {
    rv: u64,
    next_uid: u64,
    history_limit: usize,
    kinds: [KindState; 2],
}

fn key_of(obj: &Value) -> Result<(String, String), Error> {
    let name = obj["metadata"]["name"].as_str().filter(|n| !n.is_empty());
    let name = name.ok_or_else(|| Error::Invalid("metadata.name is required".into()))?;
    let ns = obj["metadata"]["namespace"].as_str().filter(|n| !n.is_empty()).unwrap_or("default");
    Ok((ns.to_owned(), name.to_owned()))
}

fn namespace_of(obj: &Value) -> &str {
    obj["metadata"]["namespace"].as_str().unwrap_or("")
}

impl Store {
    /// An empty store at resourceVersion 1 keeping at most `history_limit` events per kind.
    pub fn new(history_limit: usize) -> Self {
        Store { rv: 1, next_uid: 1, history_limit: history_limit.max(1), kinds: Default::default() }
    }

    /// The current (latest) resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    fn state(&mut self, kind: Kind) -> &mut KindState {
        &mut self.kinds[kind.index()]
    }

    fn record(&mut self, kind: Kind, event_type: &'static str, object: Value) {
        let rv = self.rv;
        let limit = self.history_limit;
        let state = self.state(kind);
        state.history.push_back(Event { rv, event_type, object });
        while state.history.len() > limit {
            if let Some(old) = state.history.pop_front() {
                state.history_start = old.rv;
            }
        }
    }

    /// Bumps the resourceVersion and stamps `obj` with it (and namespace, uid, timestamp).
    fn stamp(&mut self, obj: &mut Value, ns: &str, old: Option<&Value>) {
        self.rv += 1;
        let meta = &mut obj["metadata"];
        meta["namespace"] = Value::from(ns);
        meta["resourceVersion"] = Value::from(self.rv.to_string());
        for field in ["uid", "creationTimestamp"] {
            if meta[field].as_str().is_none_or(str::is_empty) {
                meta[field] = match old.map(|o| &o["metadata"][field]) {
                    Some(Value::String(s)) => Value::from(s.clone()),
                    _ if field == "uid" => {
                        self.next_uid += 1;
                        Value::from(format!("00000000-0000-4000-8000-{:012x}", self.next_uid))
                    }
                    _ => Value::from(now_rfc3339()),
                };
            }
        }
    }

    /// Adds a new object; fails if it already exists.
    pub fn create(&mut self, mut obj: Value) -> Result<Value, Error> {
        let kind = Kind::of_object(&obj)?;
        let (ns, name) = key_of(&obj)?;
        if self.state(kind).objects.contains_key(&(ns.clone(), name.clone())) {
            return Err(Error::AlreadyExists { kind: kind.kind(), namespace: ns, name });
        }
        self.stamp(&mut obj, &ns, None);
        self.state(kind).objects.insert((ns, name), obj.clone());
        self.record(kind, "ADDED", obj.clone());
        Ok(obj)
    }

    /// Replaces an existing object; uid and creationTimestamp carry over if absent.
    pub fn update(&mut self, mut obj: Value) -> Result<Value, Error> {
        let kind = Kind::of_object(&obj)?;
        let key = key_of(&obj)?;
        let Some(old) = self.state(kind).objects.get(&key).cloned() else {
            return Err(Error::NotFound { kind: kind.kind(), namespace: key.0, name: key.1 });
        };
        self.stamp(&mut obj, &key.0, Some(&old));
        self.state(kind).objects.insert(key, obj.clone());
        self.record(kind, "MODIFIED", obj.clone());
        Ok(obj)
    }

    /// Removes an object; its DELETED event carries the deletion's resourceVersion.
    pub fn delete(&mut self, kind: Kind, ns: &str, name: &str) -> Result<Value, Error> {
        let key = (ns.to_owned(), name.to_owned());
        let Some(mut obj) = self.state(kind).objects.remove(&key) else {
            return Err(Error::NotFound { kind: kind.kind(), namespace: key.0, name: key.1 });
        };
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = Value::from(self.rv.to_string());
        self.record(kind, "DELETED", obj.clone());
        Ok(obj)
    }

    /// One object, if present.
    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Option<Value> {
        self.kinds[kind.index()].objects.get(&(ns.to_owned(), name.to_owned())).cloned()
    }

    /// All objects of `kind` (in namespace `ns` if given) and the current resourceVersion.
    pub fn list(&self, kind: Kind, ns: Option<&str>) -> (Vec<Value>, u64) {
        let items = self.kinds[kind.index()]
            .objects
            .iter()
            .filter(|((obj_ns, _), _)| ns.is_none_or(|ns| ns == obj_ns))
            .map(|(_, v)| v.clone())
            .collect();
        (items, self.rv)
    }

    /// One page of a list: at most `limit` objects after the key `after`
    /// (exclusive), in key order, and the key to continue after if more remain.
    /// Later pages show the store as it is then (a real API server serves them
    /// from the first page's snapshot; the tests here do not depend on that).
    pub fn list_page(
        &self,
        kind: Kind,
        ns: Option<&str>,
        limit: usize,
        after: Option<&(String, String)>,
    ) -> (Vec<Value>, u64, Option<(String, String)>) {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut page = self.kinds[kind.index()]
            .objects
            .range((start, Bound::Unbounded))
            .filter(|((obj_ns, _), _)| ns.is_none_or(|ns| ns == obj_ns));
        let items: Vec<(&(String, String), &Value)> = page.by_ref().take(limit).collect();
        let more = page.next().is_some();
        let next = if more { items.last().map(|(k, _)| (*k).clone()) } else { None };
        (items.into_iter().map(|(_, v)| v.clone()).collect(), self.rv, next)
    }

    /// The events of `kind` (in `ns` if given) after resourceVersion `since`.
    pub fn events_since(&self, kind: Kind, ns: Option<&str>, since: u64) -> Since {
        let state = &self.kinds[kind.index()];
        if since < state.history_start {
            return Since::Expired { oldest: state.history_start };
        }
        let events = state
            .history
            .iter()
            .filter(|e| e.rv > since && ns.is_none_or(|ns| ns == namespace_of(&e.object)))
            .cloned()
            .collect();
        Since::Events(events, self.rv)
    }

    /// Drops all history, as etcd compaction at the current revision does: a watch
    /// can then only start at the current resourceVersion or later.
    pub fn compact(&mut self) {
        let rv = self.rv;
        for state in &mut self.kinds {
            state.history.clear();
            state.history_start = rv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::pod_json;

    fn pod(name: &str) -> Value {
        pod_json(name, "default", "", &["10.0.0.1"], "Running", &[], false)
    }

    #[test]
    fn mutations_bump_rv_and_record_events() {
        let mut s = Store::new(10);
        let a = s.create(pod("a")).unwrap();
        assert_eq!(a["metadata"]["resourceVersion"], "2");
        let uid = a["metadata"]["uid"].clone();
        let a2 = s.update(pod("a")).unwrap();
        assert_eq!(a2["metadata"]["uid"], uid);
        s.delete(Kind::Pod, "default", "a").unwrap();
        assert!(s.create(pod("a")).is_ok());
        assert!(matches!(s.create(pod("a")), Err(Error::AlreadyExists { .. })));
        let Since::Events(events, rv) = s.events_since(Kind::Pod, None, 2) else { panic!() };
        let types: Vec<_> = events.iter().map(|e| e.event_type).collect();
        assert_eq!(types, ["MODIFIED", "DELETED", "ADDED"]);
        assert_eq!(rv, 5);
    }

    #[test]
    fn bounded_history_and_compaction_expire_old_versions() {
        let mut s = Store::new(2);
        for name in ["a", "b", "c"] {
            s.create(pod(name)).unwrap();
        }
        assert!(matches!(s.events_since(Kind::Pod, None, 1), Since::Expired { oldest: 2 }));
        assert!(matches!(s.events_since(Kind::Pod, None, 2), Since::Events(ref e, 4) if e.len() == 2));
        s.compact();
        assert!(matches!(s.events_since(Kind::Pod, None, 3), Since::Expired { oldest: 4 }));
        assert!(matches!(s.events_since(Kind::Pod, None, 4), Since::Events(ref e, 4) if e.is_empty()));
    }
}
