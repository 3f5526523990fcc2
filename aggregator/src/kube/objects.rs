// SPDX-License-Identifier: Apache-2.0
//! Lean Pod and EndpointSlice types for the list/watch: they deserialize only
//! what [`pod_info`](crate::source::kube::pod_info) and
//! [`slice_info`](crate::source::kube::slice_info) read and skip the rest of
//! the object (managedFields, annotations, ownerReferences, the containers of
//! a Pod's `spec`, conditions, container statuses, endpoint addresses) with
//! `IgnoredAny`, which parses past it without allocating. A full `k8s-openapi`
//! object holds every one of those fields in small heap allocations, and the
//! watcher holds a whole list page of them at once.
//!
//! Both types implement `k8s_openapi::Resource` and `Metadata` with the
//! constants of the real types, so kube's blanket `kube::Resource` impl makes
//! `Api<LeanPod>` list and watch `/api/v1/pods` exactly as `Api<Pod>` does
//! (and `Api<LeanEndpointSlice>` `/apis/discovery.k8s.io/v1/endpointslices`).
//!
//! `metadata` stays an [`ObjectMeta`] (`kube::Resource::meta` returns one),
//! but only `name`, `namespace`, `uid`, `resourceVersion` (the watcher resumes
//! from it), `deletionTimestamp` and the labels in [`POD_LABELS`] /
//! [`SLICE_LABELS`] are filled in. A field the index starts to read must be
//! added here. Like `k8s-openapi`, a missing or `null` field becomes `None`,
//! unknown fields are ignored, the fields read must have the same JSON types,
//! and `apiVersion`/`kind`, when present, must match the real type's. Unlike
//! it, the fields skipped are not type-checked (a malformed `managedFields`
//! entry no longer fails the whole list page).

use std::{collections::BTreeMap, fmt};

use k8s_openapi::{
    api::{core::v1::Pod, discovery::v1::EndpointSlice},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
    Resource,
};
use serde::{
    de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor},
    Deserialize, Deserializer,
};

/// The Pod labels kept: the ones `pod_info` reads (the fallback service name).
pub const POD_LABELS: &[&str] = &["app.kubernetes.io/name", "app"];
/// The EndpointSlice labels kept: the one `slice_info` reads.
pub const SLICE_LABELS: &[&str] = &["kubernetes.io/service-name"];

/// The Pod fields the index needs.
#[derive(Clone, Debug, Default)]
pub struct LeanPod {
    /// Only name, namespace, uid, resourceVersion, deletionTimestamp and [`POD_LABELS`].
    pub metadata: ObjectMeta,
    pub spec: Option<LeanPodSpec>,
    pub status: Option<LeanPodStatus>,
}

/// `spec.hostNetwork`; the rest of the spec is skipped.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeanPodSpec {
    pub host_network: Option<bool>,
}

/// `status.phase`, `status.podIP` and `status.podIPs`; the rest is skipped.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct LeanPodStatus {
    pub phase: Option<String>,
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(rename = "podIPs")]
    pub pod_ips: Option<Vec<LeanPodIp>>,
}

/// One entry of `status.podIPs`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct LeanPodIp {
    pub ip: Option<String>,
}

/// The EndpointSlice fields the index needs.
#[derive(Clone, Debug, Default)]
pub struct LeanEndpointSlice {
    /// Only name, namespace, uid, resourceVersion, deletionTimestamp and [`SLICE_LABELS`].
    pub metadata: ObjectMeta,
    pub endpoints: Option<Vec<LeanEndpoint>>,
}

/// `endpoints[].targetRef`; addresses, conditions and the rest are skipped.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeanEndpoint {
    pub target_ref: Option<LeanTargetRef>,
}

/// `targetRef.kind` and `targetRef.uid`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct LeanTargetRef {
    pub kind: Option<String>,
    pub uid: Option<String>,
}

/// `k8s_openapi::Resource` and `Metadata` as `$full` has them, and a
/// `Deserialize` that checks `apiVersion`/`kind` against `$full`, reads
/// `metadata` keeping `$labels`, each listed field with its own `Deserialize`,
/// and skips everything else.
macro_rules! lean_resource {
    ($lean:ident, $full:ty, $labels:expr, [$($field:ident: $json:literal),*]) => {
        impl Resource for $lean {
            const API_VERSION: &'static str = <$full>::API_VERSION;
            const GROUP: &'static str = <$full>::GROUP;
            const KIND: &'static str = <$full>::KIND;
            const VERSION: &'static str = <$full>::VERSION;
            const URL_PATH_SEGMENT: &'static str = <$full>::URL_PATH_SEGMENT;
            type Scope = <$full as Resource>::Scope;
        }

        impl k8s_openapi::Metadata for $lean {
            type Ty = ObjectMeta;

            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }

        impl<'de> Deserialize<'de> for $lean {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                const FIELDS: &[&str] = &["apiVersion", "kind", "metadata", $($json),*];

                struct ObjectVisitor;

                impl<'de> Visitor<'de> for ObjectVisitor {
                    type Value = $lean;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(<$full>::KIND)
                    }

                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$lean, A::Error> {
                        let mut obj = $lean::default();
                        while let Some(key) = map.next_key_seed(FieldSeed(FIELDS))? {
                            match key {
                                Some("apiVersion") => expect_str(&mut map, <$full>::API_VERSION)?,
                                Some("kind") => expect_str(&mut map, <$full>::KIND)?,
                                Some("metadata") => obj.metadata = map.next_value_seed(MetaSeed($labels))?,
                                $(Some($json) => obj.$field = map.next_value()?,)*
                                _ => {
                                    map.next_value::<IgnoredAny>()?;
                                }
                            }
                        }
                        Ok(obj)
                    }
                }

                d.deserialize_struct(<$full>::KIND, FIELDS, ObjectVisitor)
            }
        }
    };
}

lean_resource!(LeanPod, Pod, POD_LABELS, [spec: "spec", status: "status"]);
lean_resource!(LeanEndpointSlice, EndpointSlice, SLICE_LABELS, [endpoints: "endpoints"]);

/// `apiVersion`/`kind` must match, as `k8s-openapi` checks them.
fn expect_str<'de, A: MapAccess<'de>>(map: &mut A, want: &'static str) -> Result<(), A::Error> {
    let got: String = map.next_value()?;
    if got == want {
        Ok(())
    } else {
        Err(de::Error::invalid_value(de::Unexpected::Str(&got), &want))
    }
}

/// A map key: `Some` of the matching name in the list, `None` for any other key
/// (compared in place, not allocated).
struct FieldSeed(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for FieldSeed {
    type Value = Option<&'static str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl Visitor<'_> for FieldSeed {
    type Value = Option<&'static str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field identifier")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().copied().find(|k| *k == v))
    }
}

/// `metadata`, keeping only the fields the index and the watcher use, and of
/// the labels only the listed keys; `null` or absent gives the default.
struct MetaSeed(&'static [&'static str]);

const META_FIELDS: &[&str] = &["name", "namespace", "uid", "resourceVersion", "deletionTimestamp", "labels"];

impl<'de> DeserializeSeed<'de> for MetaSeed {
    type Value = ObjectMeta;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ObjectMeta, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for MetaSeed {
    type Value = ObjectMeta;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ObjectMeta")
    }

    fn visit_none<E: de::Error>(self) -> Result<ObjectMeta, E> {
        Ok(ObjectMeta::default())
    }

    fn visit_unit<E: de::Error>(self) -> Result<ObjectMeta, E> {
        Ok(ObjectMeta::default())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<ObjectMeta, D::Error> {
        d.deserialize_struct("ObjectMeta", META_FIELDS, self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ObjectMeta, A::Error> {
        let mut meta = ObjectMeta::default();
        while let Some(key) = map.next_key_seed(FieldSeed(META_FIELDS))? {
            match key {
                Some("name") => meta.name = map.next_value()?,
                Some("namespace") => meta.namespace = map.next_value()?,
                Some("uid") => meta.uid = map.next_value()?,
                Some("resourceVersion") => meta.resource_version = map.next_value()?,
                Some("deletionTimestamp") => meta.deletion_timestamp = map.next_value()?,
                Some("labels") => meta.labels = map.next_value_seed(LabelsSeed(self.0))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(meta)
    }
}

/// `metadata.labels`, keeping only the listed keys. The values of the others
/// must still be strings, as `k8s-openapi` requires, but are not allocated.
struct LabelsSeed(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for LabelsSeed {
    type Value = Option<BTreeMap<String, String>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for LabelsSeed {
    type Value = Option<BTreeMap<String, String>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of labels")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut labels = BTreeMap::new();
        while let Some(key) = map.next_key_seed(FieldSeed(self.0))? {
            match key {
                Some(k) => {
                    labels.insert(k.to_owned(), map.next_value()?);
                }
                None => map.next_value_seed(SkipStr)?,
            }
        }
        Ok(Some(labels))
    }
}

/// A string value, checked and dropped.
struct SkipStr;

impl<'de> DeserializeSeed<'de> for SkipStr {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for SkipStr {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
