"""Server-rendered pages. Thin: fetch through selectors, validate with a form, write with a service.

The object a URL names (`<thing>_id`) was fetched through its scoped selector before the view
ran (ObjectScopeMiddleware): views take it with `url_object(request, "lesion_id")` instead of
fetching it again.

One module per part of the site (diagnosis/urls.py names them): home (dashboard, operations),
patients, lesions (and their images), batches, organisations (members, audit log), model (the
served model described); common holds what they share.
"""
