"""docker-worker: runs claimed tasks in Docker containers (ARCHITECTURE §6)."""
