def generate_proposals_fast(*a, **k):
    raise NotImplementedError
