"""Persistent queue backends behind one interface, IJobStore."""
