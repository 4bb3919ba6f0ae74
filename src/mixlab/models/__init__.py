"""mixlab.models"""
