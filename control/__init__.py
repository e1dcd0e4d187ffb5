"""recstack.control: exposure pacing (PID), anti-fraud and content safety, applied inside the ranking cascade.

Not implemented yet; see the control issue.
"""
