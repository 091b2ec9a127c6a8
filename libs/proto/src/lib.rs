//! Generated code for every promptops protobuf package: the event envelope,
//! the events of each bounded context and each service's v1 gRPC API.
//!
//! The sources live in `proto/promptops/<context>/v1/`; `build.rs` compiles
//! them with protox, so building needs cargo alone.

/// The largest gRPC message of the APIs that carry files (dataset uploads
/// and exports): the gateway's largest accepted body, 64 MiB.
pub const MAX_LARGE_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The encoded `FileDescriptorSet` of every proto file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("promptops_descriptor");

pub mod common {
    #[allow(clippy::all, clippy::pedantic, reason = "generated code")]
    pub mod v1 {
        tonic::include_proto!("promptops.common.v1");
    }
}

pub mod eventlog {
    #[allow(clippy::all, clippy::pedantic, reason = "generated code")]
    pub mod v1 {
        tonic::include_proto!("promptops.eventlog.v1");
    }
}

pub mod identity {
    #[allow(clippy::all, clippy::pedantic, reason = "generated code")]
    pub mod v1 {
        tonic::include_proto!("promptops.identity.v1");
    }
}

pub mod prompts {
    #[allow(clippy::all, clippy::pedantic, reason = "generated code")]
    pub mod v1 {
        tonic::include_proto!("promptops.prompts.v1");
    }
}

pub mod audit {
    #[allow(clippy::all, clippy::pedantic, reason = "generated code")]
    pub mod v1 {
        tonic::include_proto!("promptops.audit.v1");
    }
}

pub mod execution {
    #[allow(clippy::all, clippy::pedantic, reason = "generated code")]
    pub mod v1 {
        tonic::include_proto!("promptops.execution.v1");
    }
}

pub mod evaluation {
    #[allow(clippy::all, clippy::pedantic, reason = "generated code")]
    pub mod v1 {
        tonic::include_proto!("promptops.evaluation.v1");
    }
}

pub mod billing {
    #[allow(clippy::all, clippy::pedantic, reason = "generated code")]
    pub mod v1 {
        tonic::include_proto!("promptops.billing.v1");
    }
}
