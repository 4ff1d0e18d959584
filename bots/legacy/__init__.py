"""The legacy web apps, driven by Playwright: finding the browser, the logged-in session,
failure artifacts, and one page object per app whose selectors come from `selectors/*.yaml`."""
