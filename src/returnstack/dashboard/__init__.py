"""The staff dashboard (API.md section 12): server-rendered pages at /dashboard over the same
service functions as the API."""
