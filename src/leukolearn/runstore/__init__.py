"""The run directory: one SQLite file of jobs plus weights files, written by one process at a
time (lock), resumable only with the same settings and data (resume).
"""
