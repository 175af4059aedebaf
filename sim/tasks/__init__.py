"""Built-in tasks; importing this package registers every task module in it."""
import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "shaping":
        importlib.import_module(f"{__name__}.{_info.name}")
