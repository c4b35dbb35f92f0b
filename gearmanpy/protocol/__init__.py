"""The sans-I/O Gearman wire protocol: binary packets and the admin text protocol."""
