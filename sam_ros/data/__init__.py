"""Training and evaluation data for the small SAM model.

  sam_ros.data.scenes   procedural scenes (image + nested whole / part / subpart masks), static and
                        moving, with the fixed held-out evaluation seeds
"""
