"""Flotilla's common code: settings, ids, time, models, names, database and broker."""
