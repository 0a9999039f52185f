/*
 * Masking of passwords in libpq connection strings, for every place a
 * conninfo is shown: logs, status, error messages, dbswapctl output.
 *
 *   postgresql://app:s3cret@db/x?sslpassword=k  ->
 *   postgresql://app:****@db/x?sslpassword=****
 *   host=db password='s e c' user=app           ->
 *   host=db password=**** user=app
 *
 * The masker never needs the string to be valid: it masks generously where
 * the shape is unclear, and a value that is neither a URI nor key=value
 * pairs (it might be a bare password pasted by mistake) is masked whole.
 */
#ifndef DBSWAP_MASK_H
#define DBSWAP_MASK_H

/* Returns a newly allocated masked copy, or NULL when out of memory.
 * NULL in gives "(none)" out. */
char *mask_conninfo(const char *conninfo);

#endif
