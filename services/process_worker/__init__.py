"""The process engine: tasks as native processes (generic-worker "insecure" style)."""
