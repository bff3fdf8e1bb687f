"""PyInstaller runtime hook: certificate authorities for model downloads over HTTPS.

The bundle carries its own OpenSSL, which looks for authorities where the build machine's
distribution keeps them; on a system that keeps them elsewhere, certifi's bundle is used. An
SSL_CERT_FILE or SSL_CERT_DIR the user sets (a studio's proxy authority) is left alone.
"""
import os
import ssl

if "SSL_CERT_FILE" not in os.environ and "SSL_CERT_DIR" not in os.environ:
    defaults = ssl.get_default_verify_paths()  # cafile and capath are None where missing
    if defaults.cafile is None and defaults.capath is None:
        import certifi

        os.environ["SSL_CERT_FILE"] = certifi.where()
