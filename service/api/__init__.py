"""The HTTP shell: the JSON API for clinics' booking systems, the providers' webhooks, the unsubscribe
page, health and metrics. Routes are thin: they validate input (``schemas``), turn it into a use case's
command, commit, and shape the answer; they run no SQL and decide nothing themselves.
"""
