"""The storefront: customers and guests on the merchant's site (API.md 4.1)."""
