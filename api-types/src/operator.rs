//! Operator views: the cross-tenant listing.

use serde::{Deserialize, Serialize};

/// A tenant as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TenantView {
    /// Tenant id.
    pub tenant: String,
    /// Instances it has in the inventory.
    pub instances: usize,
    /// GPUs attached to them.
    pub gpus: usize,
}

/// Body of `GET /v1/operator/tenants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TenantList {
    /// Every tenant of the inventory, by id.
    pub tenants: Vec<TenantView>,
}
