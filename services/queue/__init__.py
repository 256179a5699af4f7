"""The queue service: Flotilla's HTTP front (Queue API, Auth API) for people and workers."""
