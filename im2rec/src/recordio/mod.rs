//! MXNet RecordIO (see the submodules).
