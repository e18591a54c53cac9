"""observing"""
