"""FFHQ face alignment: robust image input, detection, landmarks, the FFHQ crop and paste-back."""
