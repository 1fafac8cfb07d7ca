//! `nodectl talos apply-patch`.
