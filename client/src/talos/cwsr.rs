//! `nodectl cwsr status|disable|enable`.
