HOMES: dict[str, str] = {}
NOT_PERSONAL: dict[str, str] = {}
