/*
 * The model's observers; see changes.h.
 */
#include <errno.h>

#include "changes.h"
#include "common/util.h"

int changes_observe(struct changes *c, change_fn *fn, void *data)
{
	if (c->n == ARRAY_SIZE(c->v))
		return -ENOSPC;
	c->v[c->n].fn = fn;
	c->v[c->n].data = data;
	c->n++;
	return 0;
}

void changes_forget(struct changes *c, change_fn *fn, void *data)
{
	for (size_t i = 0; i < c->n; i++) {
		if (c->v[i].fn != fn || c->v[i].data != data)
			continue;
		for (size_t j = i + 1; j < c->n; j++)
			c->v[j - 1] = c->v[j];
		c->n--;
		return;
	}
}

void changes_tell(const struct changes *c, const struct change *ch)
{
	for (size_t i = 0; i < c->n; i++)
		c->v[i].fn(ch, c->v[i].data);
}
