//! `ImageCatalog` (namespaced) and `ClusterImageCatalog` (cluster-wide): lists of
//! PostgreSQL images by major version. A Cluster's `spec.imageCatalogRef` names a catalog
//! and a major; the operator runs the image the catalog gives for that major, so a new
//! minor release is one edit of the catalog for every cluster that uses it.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The images of a catalog, one per PostgreSQL major version.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "postgresql.cnpg.io",
    version = "v1",
    kind = "ImageCatalog",
    plural = "imagecatalogs",
    namespaced,
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ImageCatalogSpec {
    /// The images, at most one per major version (1 to 8 of them).
    #[schemars(length(min = 1, max = 8))]
    pub images: Vec<CatalogImage>,
    /// Images of other components (PgBouncer), by key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub component_images: Vec<CatalogComponentImage>,
}

/// The same list, for every namespace.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "postgresql.cnpg.io",
    version = "v1",
    kind = "ClusterImageCatalog",
    plural = "clusterimagecatalogs",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterImageCatalogSpec {
    /// The images, at most one per major version (1 to 8 of them).
    #[schemars(length(min = 1, max = 8))]
    pub images: Vec<CatalogImage>,
    /// Images of other components (PgBouncer), by key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub component_images: Vec<CatalogComponentImage>,
}

impl From<ClusterImageCatalogSpec> for ImageCatalogSpec {
    fn from(s: ClusterImageCatalogSpec) -> Self {
        ImageCatalogSpec {
            images: s.images,
            component_images: s.component_images,
        }
    }
}

/// One image of a catalog.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CatalogImage {
    /// The image (tag and/or digest).
    pub image: String,
    /// The PostgreSQL major version it runs (10 or later).
    #[schemars(range(min = 10))]
    pub major: i32,
    /// Extensions mounted from image volumes with this image (PostgreSQL 18+).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<super::cluster::ExtensionConfiguration>,
}

/// The image of a component other than PostgreSQL.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CatalogComponentImage {
    /// Its key (`pgbouncer`), unique in the catalog.
    pub key: String,
    /// The image.
    pub image: String,
}

/// The image a catalog's list gives for `major`, or why there is none (naming the catalog
/// as `what`, e.g. `ClusterImageCatalog postgresql`).
pub fn image_for(images: &[CatalogImage], major: i32, what: &str) -> Result<String, String> {
    images
        .iter()
        .find(|i| i.major == major)
        .map(|i| i.image.clone())
        .ok_or_else(|| {
            let have: Vec<String> = images.iter().map(|i| i.major.to_string()).collect();
            format!(
                "{what} has no image for PostgreSQL {major} (it has {}); add one, or pick one of those majors in spec.imageCatalogRef.major",
                if have.is_empty() {
                    "none".to_owned()
                } else {
                    have.join(", ")
                }
            )
        })
}

/// The image a catalog's `componentImages` gives for `key` (`pgbouncer`), or why there is
/// none.
pub fn component_image(
    images: &[CatalogComponentImage],
    key: &str,
    what: &str,
) -> Result<String, String> {
    images
        .iter()
        .find(|i| i.key == key)
        .map(|i| i.image.clone())
        .ok_or_else(|| {
            let have: Vec<&str> = images.iter().map(|i| i.key.as_str()).collect();
            format!(
                "{what} has no component image {key:?} (it has {}); add it to spec.componentImages, or name another key",
                if have.is_empty() {
                    "none".to_owned()
                } else {
                    have.join(", ")
                }
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_major_picks_its_image_or_says_which_there_are() {
        let images = [
            CatalogImage {
                image: "ghcr.io/cloudnative-pg/postgresql:15.8".into(),
                major: 15,
                ..Default::default()
            },
            CatalogImage {
                image: "ghcr.io/cloudnative-pg/postgresql:16.4".into(),
                major: 16,
                ..Default::default()
            },
        ];
        assert_eq!(
            image_for(&images, 16, "ImageCatalog c").as_deref(),
            Ok("ghcr.io/cloudnative-pg/postgresql:16.4")
        );
        let e = image_for(&images, 17, "ImageCatalog c").expect_err("none for 17");
        assert!(
            e.contains("no image for PostgreSQL 17 (it has 15, 16)"),
            "{e}"
        );
        let components = [CatalogComponentImage {
            key: "pgbouncer".into(),
            image: "ghcr.io/cloudnative-pg/pgbouncer:1.24.1".into(),
        }];
        assert_eq!(
            component_image(&components, "pgbouncer", "c").as_deref(),
            Ok("ghcr.io/cloudnative-pg/pgbouncer:1.24.1")
        );
        let e = component_image(&components, "bouncer", "c").expect_err("no such key");
        assert!(
            e.contains("no component image \"bouncer\" (it has pgbouncer)"),
            "{e}"
        );
    }
}
