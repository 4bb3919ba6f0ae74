"""mixlab.mixopt"""
