"""Offline jobs. Each takes a date range and writes date-partitioned output, replacing exactly those days."""
