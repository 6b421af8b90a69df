//! The backend contract lives in `switchyard-backend`, so backends build
//! without the engine; re-exported here for the engine's users.

pub use switchyard_backend::{
    Accelerator, Backend, BackendError, Job, LogSink, Resources, StepOutcome, VolumeClaim,
};
