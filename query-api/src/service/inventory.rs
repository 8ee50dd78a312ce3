//! The inventory service: the tenant's instances as the API shows them.

use wattprint_core::TenantScope;
use wattprint_store::{InstanceRecord, Store};

use super::*;
use crate::error::ApiError;

/// The API's view of an inventory record.
pub fn instance_view(r: &InstanceRecord) -> InstanceView {
    InstanceView {
        instance_id: r.instance.to_string(),
        region: r.region.to_string(),
        zip_code: r.zip_code.clone(),
        gpus: r
            .gpus
            .iter()
            .map(|g| GpuView {
                uuid: g.uuid.to_string(),
                model: g.model.clone(),
                power_limit_w: g.power_limit.to_watts(),
            })
            .collect(),
    }
}

/// The tenant's instances.
pub async fn list_instances(
    store: &dyn Store,
    scope: &TenantScope,
) -> Result<Vec<InstanceView>, ApiError> {
    let records = store
        .list_instances(scope)
        .await
        .map_err(|e| ApiError::from_store(e, || "no instances".into()))?;
    Ok(records.iter().map(instance_view).collect())
}
